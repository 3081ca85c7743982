/**
 * PEFT adapter format: adapter_config.json <-> LoraConfig, and adapter_model.safetensors keys
 *   base_model.model.<module path>.lora_A.weight  [r, in]
 *   base_model.model.<module path>.lora_B.weight  [out, r]
 * Loading checks every key and shape against the model and reports all problems at once.
 */
import type { LoraConfig } from "../lora/config.js";
import { findTargets, loraLayers, patternValue } from "../lora/inject.js";
import { LoRALinear } from "../lora/layer.js";
import { Linear } from "../nn/layers.js";
import { type Module, setSubmodule } from "../nn/module.js";
import { shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import {
  type SafetensorsTensor,
  type SerializableTensor,
  serializeSafetensors,
  tensorToFloat32,
} from "./safetensors.js";

const PREFIX = "base_model.model.";
const KEY = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$/;

type Json = Record<string, unknown>;

/** adapter_config.json -> LoraConfig. Unknown keys are ignored (newer PEFT versions add fields). */
export function parseAdapterConfig(json: Json, source: string, defaultTargets: string[]): LoraConfig {
  const fail = (msg: string) => new Error(`${source}: ${msg}`);
  if (json.peft_type !== undefined && json.peft_type !== "LORA") {
    throw fail(`peft_type ${JSON.stringify(json.peft_type)} is not supported; only LORA adapters load here`);
  }
  if (json.use_dora === true) throw fail("DoRA adapters (use_dora: true) are not supported yet");
  if (json.lora_bias === true)
    throw fail("adapters with LoRA biases (lora_bias: true) are not supported yet");
  if (Array.isArray(json.modules_to_save) && json.modules_to_save.length > 0) {
    throw fail(
      `modules_to_save ${JSON.stringify(json.modules_to_save)} is not supported; only LoRA A/B weights load`,
    );
  }
  const r = json.r ?? 8;
  if (typeof r !== "number" || !Number.isInteger(r) || r <= 0)
    throw fail(`"r" must be a positive integer, got ${JSON.stringify(r)}`);
  const alpha = json.lora_alpha ?? 8;
  if (typeof alpha !== "number" || !(alpha > 0))
    throw fail(`"lora_alpha" must be > 0, got ${JSON.stringify(alpha)}`);
  const targets = json.target_modules ?? defaultTargets;
  if (
    !(typeof targets === "string" || (Array.isArray(targets) && targets.every((t) => typeof t === "string")))
  ) {
    throw fail(`"target_modules" must be a list of names or a regex string, got ${JSON.stringify(targets)}`);
  }
  const layers = json.layers_to_transform;
  const pattern = (key: string) => {
    const v = json[key] ?? {};
    if (typeof v !== "object" || v === null || Object.values(v).some((x) => typeof x !== "number")) {
      throw fail(`"${key}" must map module names to numbers`);
    }
    return v as Record<string, number>;
  };
  return {
    r,
    lora_alpha: alpha,
    lora_dropout: typeof json.lora_dropout === "number" ? json.lora_dropout : 0,
    target_modules: targets as string[] | string,
    exclude_modules: (json.exclude_modules as string[] | string | null | undefined) ?? null,
    layers_to_transform:
      typeof layers === "number" ? [layers] : ((layers as number[] | null | undefined) ?? null),
    use_rslora: json.use_rslora === true,
    init_lora_weights: json.init_lora_weights === "gaussian" ? "gaussian" : json.init_lora_weights !== false,
    rank_pattern: pattern("rank_pattern"),
    alpha_pattern: pattern("alpha_pattern"),
    fan_in_fan_out: json.fan_in_fan_out === true,
  };
}

/** LoraConfig -> adapter_config.json, with the fields PEFT writes (sorted keys). */
export function adapterConfigJson(config: LoraConfig, baseModel: string, extra: Json = {}): Json {
  const out: Json = {
    alpha_pattern: config.alpha_pattern ?? {},
    auto_mapping: null,
    base_model_name_or_path: baseModel,
    bias: "none",
    exclude_modules: config.exclude_modules ?? null,
    fan_in_fan_out: config.fan_in_fan_out ?? false,
    inference_mode: true,
    init_lora_weights: config.init_lora_weights,
    layers_pattern: null,
    layers_to_transform: config.layers_to_transform ?? null,
    lora_alpha: config.lora_alpha,
    lora_bias: false,
    lora_dropout: config.lora_dropout,
    modules_to_save: null,
    peft_type: "LORA",
    r: config.r,
    rank_pattern: config.rank_pattern ?? {},
    revision: null,
    target_modules: config.target_modules,
    task_type: "CAUSAL_LM",
    use_dora: false,
    use_rslora: config.use_rslora,
    ...extra,
  };
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/** The adapter's tensors under PEFT's names, in module order. */
export function adapterTensors(model: Module): SerializableTensor[] {
  return loraLayers(model).flatMap(([path, l]) => [
    {
      name: `${PREFIX}${path}.lora_A.weight`,
      dtype: "F32" as const,
      shape: [...l.lora_A.shape],
      data: l.lora_A.data,
    },
    {
      name: `${PREFIX}${path}.lora_B.weight`,
      dtype: "F32" as const,
      shape: [...l.lora_B.shape],
      data: l.lora_B.data,
    },
  ]);
}

/** An adapter folder's two files, as PEFT's save_pretrained writes them. */
export function adapterFiles(
  model: Module,
  config: LoraConfig,
  baseModel: string,
): Record<string, Uint8Array | string> {
  return {
    "adapter_model.safetensors": serializeSafetensors(adapterTensors(model), { format: "pt" }),
    "adapter_config.json": `${JSON.stringify(adapterConfigJson(config, baseModel), null, 2)}\n`,
  };
}

/**
 * Wraps the model's layers with the adapter's A and B (trainable, so training can continue).
 * The base model is frozen. Throws once, listing every key and shape that does not fit.
 */
export function attachAdapter(
  model: Module & { headName?: string },
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): string[] {
  const errors: string[] = [];
  const modules = new Map(model.namedModules());
  const pairs = new Map<string, { A?: SafetensorsTensor; B?: SafetensorsTensor }>();
  for (const [key, entry] of tensors) {
    const m = KEY.exec(key);
    if (!m) {
      errors.push(`unexpected tensor "${key}" (only ${PREFIX}<module>.lora_A/lora_B.weight are supported)`);
      continue;
    }
    const pair = pairs.get(m[1]!) ?? {};
    pair[m[2] as "A" | "B"] = entry;
    pairs.set(m[1]!, pair);
  }
  const plan: [string, Linear, Tensor, Tensor, number, number][] = [];
  for (const [path, { A, B }] of pairs) {
    const base = modules.get(path);
    if (!(base instanceof Linear)) {
      errors.push(`"${path}" is not a linear layer of this model${base ? "" : " (no such module)"}`);
      continue;
    }
    if (!A || !B) {
      errors.push(`"${path}" has lora_${A ? "A" : "B"} but no lora_${A ? "B" : "A"}`);
      continue;
    }
    const r = patternValue(path, config.rank_pattern, config.r);
    const alpha = patternValue(path, config.alpha_pattern, config.lora_alpha);
    const wantA = [r, base.inFeatures];
    const wantB = [base.outFeatures, r];
    const fits = (e: SafetensorsTensor, want: number[]) =>
      e.shape.length === 2 && e.shape[0] === want[0] && e.shape[1] === want[1];
    if (!fits(A, wantA))
      errors.push(`"${path}.lora_A.weight" has shape ${shapeStr(A.shape)}, expected ${shapeStr(wantA)}`);
    if (!fits(B, wantB))
      errors.push(`"${path}.lora_B.weight" has shape ${shapeStr(B.shape)}, expected ${shapeStr(wantB)}`);
    if (fits(A, wantA) && fits(B, wantB)) {
      const a = new Tensor(tensorToFloat32(A), wantA, true);
      const b = new Tensor(tensorToFloat32(B), wantB, true);
      plan.push([path, base, a, b, r, alpha]);
    }
  }
  if (pairs.size === 0 && errors.length === 0) errors.push("the adapter holds no LoRA weights");
  try {
    const missing = findTargets(model, config)
      .map(([p]) => p)
      .filter((p) => !pairs.has(p));
    if (missing.length > 0)
      errors.push(
        `target_modules select ${missing.length} module(s) with no weights: ${missing.slice(0, 8).join(", ")}`,
      );
  } catch (e) {
    errors.push((e as Error).message);
  }
  if (errors.length > 0) {
    throw new Error(
      `${source}: adapter does not fit this model (${errors.length} problem${errors.length > 1 ? "s" : ""}):\n${errors.map((e) => `  - ${e}`).join("\n")}\nWas it trained on a different base model?`,
    );
  }
  model.freeze();
  for (const [path, base, a, b, r, alpha] of plan) {
    setSubmodule(model, path, LoRALinear.withWeights(base, a, b, { r, alpha, rslora: config.use_rslora }));
  }
  return plan.map(([p]) => p);
}
