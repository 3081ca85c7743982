/**
 * 16-bit frozen base weights (`--base-dtype`). LoRA never updates W0, so the frozen Linear weights and
 * embedding tables can be stored in bf16 or f16, halving their memory; LoRA A/B, norms, biases and the
 * optimizer state stay f32.
 */
import { backend } from "../kernels/index.js";
import type { HalfDType } from "../tensor/dtype.js";
import type { Tensor } from "../tensor/tensor.js";
import { Embedding, Linear } from "./layers.js";
import type { Module } from "./module.js";

/** How frozen base weights are stored. */
export type BaseDType = "f32" | HalfDType;
/** What `--base-dtype` accepts; "auto" is resolved by resolveBaseDtype. */
export const BASE_DTYPES = ["auto", "f32", "bf16", "f16"] as const;
export type BaseDTypeSetting = (typeof BASE_DTYPES)[number];

export function isBaseDtypeSetting(s: unknown): s is BaseDTypeSetting {
  return BASE_DTYPES.includes(s as BaseDTypeSetting);
}

/**
 * The one place "auto" is decided: the default is whatever trains faster, provided held-out loss stays
 * within 0.5% of f32 (measured on the embedded model and stories260K: see the README, "16-bit base
 * weights", and test/nn/base-dtype.test.ts). bf16 meets the loss bound, but it is only faster where the
 * backend's bf16 products are (`fastBf16`: native says so on AMD CPUs with AVX512_BF16, which run them
 * at twice the f32 rate, and not on Intel's, which run them at about the f32 rate; native/src/gemm.cc
 * gemm_bf16_faster); elsewhere (ref, wasm) a bf16 weight is decoded and the activations rounded on
 * every product, slower than f32.
 * f16 is never the automatic choice: no CPU multiplies it faster than f32.
 */
export function resolveBaseDtype(setting: BaseDTypeSetting = "auto"): BaseDType {
  if (setting !== "auto") return setting;
  return backend().fastBf16 ? "bf16" : "f32";
}

export interface CastReport {
  /** Distinct weight tensors converted (a tied weight counts once). */
  tensors: number;
  /** Bytes of those tensors before and after. */
  bytesBefore: number;
  bytesAfter: number;
}

/**
 * Stores every frozen Linear weight and embedding table of `model` in `dtype` ("f32" converts 16-bit
 * ones back). Skips anything that requires grad (LoRA A/B, a --full run) and never touches norms or
 * biases. A tensor shared by two modules (a tied head) is converted once and stays shared.
 * Works before or after applyLoRA (a LoRALinear's base_layer is a Linear).
 */
export function castBaseWeights(model: Module, dtype: BaseDType): CastReport {
  const report: CastReport = { tensors: 0, bytesBefore: 0, bytesAfter: 0 };
  const done = new Map<Tensor, Tensor>();
  for (const [, m] of model.namedModules()) {
    if (!(m instanceof Linear || m instanceof Embedding)) continue;
    const w = m.weight;
    if (w.requiresGrad || w.dtype === dtype) continue;
    let cast = done.get(w);
    if (!cast) {
      cast = dtype === "f32" ? w.toFloat32() : w.toHalf(dtype);
      done.set(w, cast);
      report.tensors++;
      report.bytesBefore += w.byteLength;
      report.bytesAfter += cast.byteLength;
    }
    m.weight = cast;
  }
  return report;
}
