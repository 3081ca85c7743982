/**
 * PEFT adapter format: adapter_config.json <-> LoraConfig, and adapter_model.safetensors keys
 *   base_model.model.<module path>.lora_A.weight  [r, in]
 *   base_model.model.<module path>.lora_B.weight  [out, r]
 * Loading checks every key and shape against the model and reports all problems at once.
 */

import { AdapterSet, adapterSetOf, type LayerAdapter } from "../lora/adapter-set.js";
import { type LoraConfig, loraScaling } from "../lora/config.js";
import { findTargets, linearLayers, loraLayers, patternValue } from "../lora/inject.js";
import { LoRALinear } from "../lora/layer.js";
import type { ReportModule } from "../lora/report.js";
import { ConfigFields, showValue } from "../models/model.js";
import { type Module, setSubmodule } from "../nn/module.js";
import { shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import {
  describeNonFinite,
  FLOAT_DTYPES,
  type SafetensorsTensor,
  type SerializableTensor,
  serializeSafetensors,
  tensorToFloat32,
} from "./safetensors.js";

const PREFIX = "base_model.model.";
const KEY = /^base_model\.model\.(.+)\.lora_(A|B)(?:\.[A-Za-z0-9_-]+)?\.weight$/;

type Json = Record<string, unknown>;

/**
 * The largest LoRA scale (lora_alpha / r, or / √r with rsLoRA) accepted. Adapters in use have scales of
 * about 0.1 to 64 (alpha 8..256 over r 1..128). The update scale · B·A is added to base weights of order
 * 1e-2, so at 1e6, four orders of magnitude above any trained adapter, it swamps the base model, and in
 * f16 it overflows (65504) once |B·A| > 0.07. A larger scale is a typo or a damaged file (an alpha of
 * 1e308 makes every output infinite).
 */
export const MAX_LORA_SCALE = 1e6;

type LoraNumbers = Pick<
  LoraConfig,
  "r" | "lora_alpha" | "lora_dropout" | "use_rslora" | "rank_pattern" | "alpha_pattern"
>;

/**
 * What is wrong with a LoRA config's numbers, as PEFT names them (none: []). Ranks must be positive
 * integers, alphas positive and finite, dropout in [0, 1), and the largest scale any module can get
 * (largest alpha over smallest rank) at most MAX_LORA_SCALE. For adapter_config.json and for flags alike.
 */
export function loraConfigProblems(c: LoraNumbers): string[] {
  const problems: string[] = [];
  const ranks: Array<[string, unknown]> = [["r", c.r], ...named("rank_pattern", c.rank_pattern)];
  const alphas: Array<[string, unknown]> = [
    ["lora_alpha", c.lora_alpha],
    ...named("alpha_pattern", c.alpha_pattern),
  ];
  for (const [what, r] of ranks)
    if (!(Number.isSafeInteger(r) && (r as number) > 0))
      problems.push(`${what} must be a positive integer, got ${showValue(r)}`);
  for (const [what, a] of alphas) {
    if (!(typeof a === "number" && Number.isFinite(a) && a > 0))
      problems.push(`${what} must be a positive finite number, got ${showValue(a)}`);
  }
  const d = c.lora_dropout;
  if (!(typeof d === "number" && d >= 0 && d < 1))
    problems.push(`lora_dropout must be in [0, 1), got ${showValue(d)}`);
  if (problems.length > 0) return problems;
  const r = Math.min(...ranks.map(([, v]) => v as number));
  const alpha = Math.max(...alphas.map(([, v]) => v as number));
  const scale = loraScaling(r, alpha, c.use_rslora);
  if (!(scale <= MAX_LORA_SCALE)) {
    problems.push(
      `the LoRA scale lora_alpha ${alpha} / ${c.use_rslora ? `√r (r ${r})` : `r ${r}`} = ${scale} is above ${MAX_LORA_SCALE}, far beyond any trained adapter; check lora_alpha and r`,
    );
  }
  return problems;
}

const named = (key: string, pattern: Record<string, number> | undefined): Array<[string, unknown]> =>
  Object.entries(pattern ?? {}).map(([k, v]) => [`${key} "${k}"`, v]);

/**
 * adapter_config.json -> LoraConfig. Unknown keys are ignored (newer PEFT versions add fields); the
 * fields read are checked, and every problem is reported at once.
 */
export function parseAdapterConfig(json: Json, source: string, defaultTargets: string[]): LoraConfig {
  const f = new ConfigFields(json, source, "fix the file or re-save the adapter");
  f.require(
    json.peft_type === undefined || json.peft_type === "LORA",
    `peft_type ${JSON.stringify(json.peft_type)} is not supported; only LORA adapters load here`,
  );
  f.require(!f.flag("use_dora"), "DoRA adapters (use_dora: true) are not supported yet");
  f.require(!f.flag("lora_bias"), "adapters with LoRA biases (lora_bias: true) are not supported yet");
  f.require(
    !(Array.isArray(json.modules_to_save) && json.modules_to_save.length > 0),
    `modules_to_save ${JSON.stringify(json.modules_to_save)} is not supported; only LoRA A/B weights load`,
  );
  const targets = json.target_modules ?? defaultTargets;
  f.require(
    typeof targets === "string" || (Array.isArray(targets) && targets.every((t) => typeof t === "string")),
    `"target_modules" must be a list of names or a regex string, got ${JSON.stringify(targets)}`,
  );
  const layers = json.layers_to_transform;
  const pattern = (key: string) => {
    const v = json[key] ?? {};
    const ok = typeof v === "object" && v !== null && Object.values(v).every((x) => typeof x === "number");
    f.require(ok, `"${key}" must map module names to numbers`);
    return ok ? (v as Record<string, number>) : {};
  };
  const config: LoraConfig = {
    r: (json.r ?? 8) as number,
    lora_alpha: (json.lora_alpha ?? 8) as number,
    lora_dropout: (json.lora_dropout ?? 0) as number,
    target_modules: targets as string[] | string,
    exclude_modules: (json.exclude_modules as string[] | string | null | undefined) ?? null,
    layers_to_transform:
      typeof layers === "number" ? [layers] : ((layers as number[] | null | undefined) ?? null),
    use_rslora: f.flag("use_rslora"),
    init_lora_weights: json.init_lora_weights === "gaussian" ? "gaussian" : json.init_lora_weights !== false,
    rank_pattern: pattern("rank_pattern"),
    alpha_pattern: pattern("alpha_pattern"),
    fan_in_fan_out: f.flag("fan_in_fan_out"),
  };
  for (const p of loraConfigProblems(config)) f.require(false, p);
  f.done();
  return config;
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

/** An adapter read from its files: its PEFT config and its tensors, not yet attached to a model. */
export interface AdapterInput {
  config: LoraConfig;
  tensors: ReadonlyMap<string, SafetensorsTensor>;
  /** Where it came from, for messages. */
  source: string;
}

/**
 * Checks a PEFT adapter's keys, shapes and values against the model and returns its weights per layer
 * (A and B trainable, in f32). Throws once, listing every key and shape that does not fit.
 */
export function adapterLayers(
  model: Module & { headName?: string; adapterScope?: string },
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): LayerAdapter[] {
  const errors: string[] = []; // what does not fit the model
  const outside: string[] = []; // modules of a multimodal model's other towers, which are not built
  const damaged: string[] = []; // values that are not weights
  const modules = new Map<string, Module>(model.namedModules());
  const linears = new Map(linearLayers(model));
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
  const plan: LayerAdapter[] = [];
  for (const [path, { A, B }] of pairs) {
    const base = linears.get(path);
    if (!base && model.adapterScope && !path.startsWith(`${model.adapterScope}.`)) {
      outside.push(path);
      continue;
    }
    if (!base) {
      errors.push(
        `"${path}" is not a linear layer of this model${modules.has(path) ? "" : " (no such module)"}`,
      );
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
    for (const [e, which] of [
      [A, "A"],
      [B, "B"],
    ] as const) {
      const name = `"${path}.lora_${which}.weight"`;
      if (!FLOAT_DTYPES.includes(e.dtype))
        damaged.push(`${name} is stored as ${e.dtype}; LoRA weights are floats (${FLOAT_DTYPES.join(", ")})`);
      const bad = describeNonFinite(e);
      if (bad) damaged.push(`${name} ${bad}`);
    }
    if (fits(A, wantA) && fits(B, wantB)) {
      const a = new Tensor(tensorToFloat32(A), wantA, true);
      const b = new Tensor(tensorToFloat32(B), wantB, true);
      plan.push({ path, A: a, B: b, r, alpha, rslora: config.use_rslora });
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
  if (outside.length > 0) {
    const scope = model.adapterScope!;
    errors.unshift(
      `${outside.length} adapted module(s) lie outside the text model ${scope}, in parts of the model this library does not build (the vision tower): ${outside.slice(0, 4).join(", ")}${outside.length > 4 ? ", ..." : ""}`,
    );
  }
  const all = [...errors, ...damaged];
  if (all.length > 0) {
    const [what, advice] =
      errors.length > 0
        ? [
            "adapter does not fit this model",
            outside.length > 0
              ? `Only the text model runs here: use an adapter whose target_modules stay inside ${model.adapterScope} (PEFT's regex ${model.adapterScope!.replace(/\./g, "\\.")}\\..*\\.(q_proj|v_proj), say, or one lora train wrote).`
              : "Was it trained on a different base model?",
          ]
        : [
            "adapter weights are damaged",
            "Use the adapter of an earlier checkpoint (a run that diverged writes NaN), or train it again.",
          ];
    throw new Error(
      `${source}: ${what} (${all.length} problem${all.length > 1 ? "s" : ""}):\n${all.map((e) => `  - ${e}`).join("\n")}\n${advice}`,
    );
  }
  return plan;
}

/**
 * Wraps the model's layers with the adapter's A and B (trainable, so training can continue).
 * The base model is frozen. Throws once, listing every key and shape that does not fit.
 */
export function attachAdapter(
  model: Module & { headName?: string; adapterScope?: string },
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): string[] {
  const plan = adapterLayers(model, config, tensors, source);
  const modules = new Map(linearLayers(model));
  model.freeze();
  for (const { path, A, B, r, alpha, rslora } of plan) {
    setSubmodule(model, path, LoRALinear.withWeights(modules.get(path)!, A, B, { r, alpha, rslora }));
  }
  return plan.map((p) => p.path);
}

/**
 * Adds a PEFT adapter under `name` to an AdapterSet, or to a model's own (PEFT's load_adapter; see
 * adapterSetOf), checked as attachAdapter checks it; returns its paths. It is not made active.
 */
export function addAdapter(target: AdapterSet | Module, name: string, adapter: AdapterInput): string[] {
  const set = target instanceof AdapterSet ? target : adapterSetOf(target);
  const plan = adapterLayers(set.model, adapter.config, adapter.tensors, adapter.source);
  for (const w of plan) {
    w.A.requiresGrad = false;
    w.B.requiresGrad = false;
  }
  set.add(name, plan);
  return plan.map((p) => p.path);
}

/**
 * The modules of PEFT-named adapter tensors, in key order, without a model (for reports): A and B
 * paired by module path, alpha from alpha_pattern, r from A's shape. Keys that are not a LoRA pair of
 * 2-D float tensors with matching r are listed in one error.
 */
export function adapterModules(
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): ReportModule[] {
  const problems: string[] = [];
  const pairs = new Map<string, { A?: SafetensorsTensor; B?: SafetensorsTensor }>();
  for (const [key, e] of tensors) {
    const m = KEY.exec(key);
    if (!m) problems.push(`unexpected tensor "${key}"`);
    else if (e.shape.length !== 2 || !FLOAT_DTYPES.includes(e.dtype))
      problems.push(`"${key}" is ${e.dtype} ${shapeStr(e.shape)}, not a 2-D float matrix`);
    else {
      const pair = pairs.get(m[1]!) ?? {};
      pair[m[2] as "A" | "B"] = e;
      pairs.set(m[1]!, pair);
    }
  }
  const out: ReportModule[] = [];
  for (const [path, { A, B }] of pairs) {
    if (!A || !B) {
      problems.push(`"${path}" has lora_${A ? "A" : "B"} but no lora_${A ? "B" : "A"}`);
      continue;
    }
    const r = A.shape[0]!;
    if (B.shape[1] !== r) {
      problems.push(`"${path}": lora_A ${shapeStr(A.shape)} and lora_B ${shapeStr(B.shape)} disagree on r`);
      continue;
    }
    const alpha = patternValue(path, config.alpha_pattern, config.lora_alpha);
    out.push({
      path,
      r,
      in: A.shape[1]!,
      out: B.shape[0]!,
      alpha,
      scale: loraScaling(r, alpha, config.use_rslora),
      A: tensorToFloat32(A),
      B: tensorToFloat32(B),
    });
  }
  if (problems.length > 0)
    throw new Error(
      `${source}: not a LoRA adapter (${problems.length} problem(s)):\n${problems.map((p) => `  - ${p}`).join("\n")}`,
    );
  return out;
}
