/**
 * A PiSSA / OLoRA adapter as a plain LoRA of the original W0, as PEFT's
 * save_pretrained(path_initial_model_for_weight_conversion=…) writes it (peft_model.py and
 * tuners/lora/model.py subtract_mutated_init): the layer computes (W0 - s·B0·A0) + s·B·A, which is
 * W0 + s·(B·A - B0·A0) = W0 + s·[B, -B0]·[A; A0], a LoRA of rank 2r with
 *   A' = [A; A0] [2r, in],  B' = [B, -B0] [out, 2r],
 * and the config: r, rank_pattern ×2; lora_alpha, alpha_pattern ×2 (×√2 with rsLoRA, so that
 * alpha/r or alpha/√r stays the same); init_lora_weights true.
 * PEFT refuses rsLoRA together with rank_pattern or alpha_pattern here; this conversion is exact for
 * those too (every alpha ×√2).
 */
import type { Module } from "../nn/module.js";
import type { LoraConfig } from "./config.js";
import { isMutatingInit } from "./init.js";
import { loraLayers } from "./inject.js";

/** The config of the converted adapter: rank 2r with the same scale per module. */
export function plainLoraConfig(config: LoraConfig): LoraConfig {
  const a = config.use_rslora ? Math.SQRT2 : 2;
  const times = (p: Record<string, number> | undefined, f: number) =>
    p ? Object.fromEntries(Object.entries(p).map(([k, v]) => [k, v * f])) : p;
  return {
    ...config,
    init_lora_weights: true,
    r: 2 * config.r,
    lora_alpha: config.lora_alpha * a,
    rank_pattern: times(config.rank_pattern, 2),
    alpha_pattern: times(config.alpha_pattern, a),
  };
}

/** One converted layer: A' [2r, in] and B' [out, 2r], row-major f32. */
export interface ConvertedLayer {
  path: string;
  r: number;
  inFeatures: number;
  outFeatures: number;
  A: Float32Array;
  B: Float32Array;
}

/**
 * Every LoRA layer of a model whose adapter was made by a PiSSA / OLoRA init (fresh, or loaded: both
 * keep the initial A0 and B0), converted to the rank-2r plain LoRA of the original W0. Throws, naming the
 * layer, when one has no initial A0 and B0 (the adapter was not made by such an init).
 */
export function convertToLora(model: Module): ConvertedLayer[] {
  const layers = loraLayers(model);
  const plain = layers.filter(([, l]) => !l.initial || !isMutatingInit(l.initial.init)).map(([p]) => p);
  if (plain.length > 0)
    throw new Error(
      `convertToLora: ${plain.length} LoRA layer(s) (${plain.slice(0, 3).join(", ")}) were not made by a PiSSA or OLoRA init, so there is nothing to convert: their adapter already is a plain LoRA of the base`,
    );
  return layers.map(([path, l]) => {
    const { r, inFeatures: inF, outFeatures: outF } = l;
    const A = new Float32Array(2 * r * inF);
    A.set(l.lora_A.data, 0);
    A.set(l.initial!.A, r * inF);
    const B = new Float32Array(outF * 2 * r);
    const b = l.lora_B.data;
    const b0 = l.initial!.B;
    for (let i = 0; i < outF; i++)
      for (let c = 0; c < r; c++) {
        B[i * 2 * r + c] = b[i * r + c]!;
        B[i * 2 * r + r + c] = -b0[i * r + c]!;
      }
    return { path, r: 2 * r, inFeatures: inF, outFeatures: outF, A, B };
  });
}
