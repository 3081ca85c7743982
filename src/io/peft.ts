/**
 * PEFT adapter format: adapter_config.json <-> LoraConfig, and adapter_model.safetensors keys
 *   base_model.model.<module path>.lora_A.weight  [r, in]
 *   base_model.model.<module path>.lora_B.weight  [out, r]
 *   base_model.model.<module path>.lora_magnitude_vector  [out]  (DoRA, use_dora: true; no ".weight")
 * Loading checks every key and shape against the model and reports all problems at once.
 */

import { AdapterSet, adapterSetOf, type LayerAdapter } from "../lora/adapter-set.js";
import { type LoraConfig, layerInit, loraScaling } from "../lora/config.js";
import { DoRALinear } from "../lora/dora.js";
import { applyExtras } from "../lora/extras.js";
import { isMutatingInit, parseInitLoraWeights } from "../lora/init.js";
import { findTargets, linearLayers, loraLayers, patternValue } from "../lora/inject.js";
import { LoRALinear } from "../lora/layer.js";
import type { ReportModule } from "../lora/report.js";
import { ConfigFields, showValue } from "../models/model.js";
import { type Module, setSubmodule } from "../nn/module.js";
import { Rng } from "../tensor/random.js";
import { shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import { applyBaseTables, type ExtraPlan, extraKeyRole, extraTensors, planExtras } from "./peft-extras.js";
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
/** DoRA's magnitude, as PEFT's save_pretrained names it (its module's ".default.weight" dropped). */
const MAGNITUDE = /^base_model\.model\.(.+)\.lora_magnitude_vector$/;

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
  f.require(!f.flag("lora_bias"), "adapters with LoRA biases (lora_bias: true) are not supported yet");
  const toSave = json.modules_to_save ?? null;
  f.require(
    toSave === null || (Array.isArray(toSave) && toSave.every((t) => typeof t === "string")),
    `"modules_to_save" must be a list of module names or null, got ${JSON.stringify(toSave)}`,
  );
  const tokens = json.trainable_token_indices ?? null;
  const ids = (v: unknown) => Array.isArray(v) && v.every((i) => Number.isInteger(i));
  f.require(
    tokens === null ||
      ids(tokens) ||
      (typeof tokens === "object" && !Array.isArray(tokens) && Object.values(tokens).every(ids)),
    `"trainable_token_indices" must be a list of token ids, {"<embedding>": [ids]} or null, got ${JSON.stringify(tokens)}`,
  );
  const targets = json.target_modules ?? defaultTargets;
  f.require(
    typeof targets === "string" || (Array.isArray(targets) && targets.every((t) => typeof t === "string")),
    `"target_modules" must be a list of names or a regex string, got ${JSON.stringify(targets)}`,
  );
  // the regular expressions PEFT builds from these fields, checked here as lora/inject.ts builds them
  const regexes: Array<[string, string]> = [];
  for (const key of ["target_modules", "exclude_modules"]) {
    const v = key === "target_modules" ? targets : json[key];
    if (typeof v === "string") regexes.push([`"${key}" ${JSON.stringify(v)}`, `^(?:${v})$`]);
  }
  for (const key of ["rank_pattern", "alpha_pattern"]) {
    const v = json[key];
    if (v !== null && typeof v === "object")
      for (const k of Object.keys(v))
        regexes.push([`"${key}" key ${JSON.stringify(k)}`, `^(?:(?:.*\\.)?(?:${k}))$`]);
  }
  for (const [what, re] of regexes) {
    try {
      new RegExp(re);
    } catch (e) {
      f.require(false, `${what} is not a valid regular expression (${(e as Error).message})`);
    }
  }
  const layers = json.layers_to_transform;
  f.require(
    layers == null ||
      Number.isSafeInteger(layers) ||
      (Array.isArray(layers) && layers.every((l) => Number.isSafeInteger(l))),
    `"layers_to_transform" must be a layer index, a list of them or null, got ${showValue(layers)}`,
  );
  const exclude = json.exclude_modules;
  f.require(
    exclude == null ||
      typeof exclude === "string" ||
      (Array.isArray(exclude) && exclude.every((t) => typeof t === "string")),
    `"exclude_modules" must be a list of names, a regex string or null, got ${showValue(exclude)}`,
  );
  const pattern = (key: string) => {
    const v = json[key] ?? {};
    const ok = typeof v === "object" && v !== null && Object.values(v).every((x) => typeof x === "number");
    f.require(ok, `"${key}" must map module names to numbers`);
    return ok ? (v as Record<string, number>) : {};
  };
  const init = parseInitLoraWeights(json.init_lora_weights);
  if ("problem" in init) f.require(false, init.problem);
  const config: LoraConfig = {
    r: (json.r ?? 8) as number,
    lora_alpha: (json.lora_alpha ?? 8) as number,
    lora_dropout: (json.lora_dropout ?? 0) as number,
    target_modules: targets as string[] | string,
    exclude_modules: (exclude as string[] | string | null | undefined) ?? null,
    layers_to_transform: typeof layers === "number" ? [layers] : Array.isArray(layers) ? layers : null,
    use_rslora: f.flag("use_rslora"),
    use_dora: f.flag("use_dora"),
    init_lora_weights: "init" in init ? init.init : true,
    rank_pattern: pattern("rank_pattern"),
    alpha_pattern: pattern("alpha_pattern"),
    fan_in_fan_out: f.flag("fan_in_fan_out"),
    modules_to_save: toSave as string[] | null,
    trainable_token_indices: tokens as LoraConfig["trainable_token_indices"],
    ensure_weight_tying: f.flag("ensure_weight_tying"),
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
    modules_to_save: config.modules_to_save?.length ? config.modules_to_save : null,
    peft_type: "LORA",
    r: config.r,
    rank_pattern: config.rank_pattern ?? {},
    revision: null,
    target_modules: config.target_modules,
    task_type: "CAUSAL_LM",
    trainable_token_indices: config.trainable_token_indices ?? null,
    use_dora: config.use_dora ?? false,
    use_rslora: config.use_rslora,
    ...extra,
  };
  return Object.fromEntries(Object.entries(out).sort(([a], [b]) => (a < b ? -1 : 1)));
}

/**
 * The adapter's tensors under PEFT's names, in module order, then those of embedding LoRA,
 * modules_to_save and trainable tokens (with `saveEmbeddingLayers`, the LoRA embeddings' tables too).
 */
export function adapterTensors(
  model: Module,
  opts: { saveEmbeddingLayers?: boolean } = {},
): SerializableTensor[] {
  const linear = loraLayers(model).flatMap(([path, l]) => [
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
    ...(l instanceof DoRALinear
      ? [
          {
            name: `${PREFIX}${path}.lora_magnitude_vector`,
            dtype: "F32" as const,
            shape: [...l.lora_magnitude_vector.shape],
            data: l.lora_magnitude_vector.data,
          },
        ]
      : []),
  ]);
  return [...linear, ...extraTensors(model, opts)];
}

/**
 * An adapter folder's two files, as PEFT's save_pretrained writes them. The tables of LoRA embeddings
 * are written only with `saveEmbeddingLayers` (PEFT's default "auto" writes them whenever embed_tokens is
 * a target: they are the size of the embedding).
 */
export function adapterFiles(
  model: Module,
  config: LoraConfig,
  baseModel: string,
  opts: { saveEmbeddingLayers?: boolean } = {},
): Record<string, Uint8Array | string> {
  return {
    "adapter_model.safetensors": serializeSafetensors(adapterTensors(model, opts), { format: "pt" }),
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
  return adapterPlan(model, config, tensors, source).layers;
}

/** adapterLayers, with the adapter's embedding LoRA, modules_to_save and trainable tokens (peft-extras.ts). */
export function adapterPlan(
  model: Module & { headName?: string; adapterScope?: string },
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): { layers: LayerAdapter[]; extras: ExtraPlan } {
  const extras = planExtras(model, config, tensors);
  const errors: string[] = [...extras.errors]; // what does not fit the model
  const outside: string[] = []; // modules of a multimodal model's other towers, which are not built
  const damaged: string[] = [...extras.damaged]; // values that are not weights
  const modules = new Map<string, Module>(model.namedModules());
  const linears = new Map(linearLayers(model));
  const pairs = new Map<string, { A?: SafetensorsTensor; B?: SafetensorsTensor }>();
  const magnitudes = new Map<string, SafetensorsTensor>();
  for (const [key, entry] of tensors) {
    const mag = MAGNITUDE.exec(key);
    if (mag) {
      magnitudes.set(mag[1]!, entry);
      continue;
    }
    if (extras.keys.has(key)) continue;
    const m = KEY.exec(key);
    if (!m) {
      errors.push(
        `unexpected tensor "${key}" (only ${PREFIX}<module>.lora_A/lora_B.weight${config.use_dora ? " and .lora_magnitude_vector" : ""} are supported)`,
      );
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
    const dora = doraMagnitude(path, magnitudes.get(path), base.outFeatures, config, errors, damaged);
    if (fits(A, wantA) && fits(B, wantB) && dora !== false) {
      const a = new Tensor(tensorToFloat32(A), wantA, true);
      const b = new Tensor(tensorToFloat32(B), wantB, true);
      plan.push({
        path,
        A: a,
        B: b,
        r,
        alpha,
        rslora: config.use_rslora,
        ...(dora ? { magnitude: dora } : {}),
      });
    }
  }
  for (const path of magnitudes.keys())
    if (!pairs.has(path)) errors.push(`"${path}" has lora_magnitude_vector but no lora_A/lora_B`);
  if (pairs.size === 0 && !extras.any && errors.length === 0)
    errors.push("the adapter holds no LoRA weights");
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
  return { layers: plan, extras };
}

/**
 * Wraps the model's layers with the adapter's A and B (trainable, so training can continue).
 * The base model is frozen. Throws once, listing every key and shape that does not fit. A PiSSA or
 * OLoRA adapter (init_lora_weights "pissa", "pissa_niter_N", "olora") first replaces each adapted W0 by
 * its residual, as PEFT does when it loads one: such an adapter belongs on the original base model.
 */
export function attachAdapter(
  model: Module & { headName?: string; adapterScope?: string },
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
  source: string,
): string[] {
  const { layers: plan, extras } = adapterPlan(model, config, tensors, source);
  const modules = new Map(linearLayers(model));
  const init = layerInit(config);
  model.freeze();
  applyBaseTables(model, extras.weights.baseTables);
  for (const { path, A, B, r, alpha, rslora, magnitude } of plan) {
    const base = modules.get(path)!;
    const layer = magnitude
      ? DoRALinear.withWeights(base, A, B, { r, alpha, rslora, init, magnitude })
      : LoRALinear.withWeights(base, A, B, { r, alpha, rslora, init });
    setSubmodule(model, path, layer);
  }
  const more = extras.any ? applyExtras(model, config, extras.embeddings, new Rng(0), extras.weights) : [];
  return [...plan.map((p) => p.path), ...more];
}

/**
 * Adds a PEFT adapter under `name` to an AdapterSet, or to a model's own (PEFT's load_adapter; see
 * adapterSetOf), checked as attachAdapter checks it; returns its paths. It is not made active.
 */
export function addAdapter(target: AdapterSet | Module, name: string, adapter: AdapterInput): string[] {
  const set = target instanceof AdapterSet ? target : adapterSetOf(target);
  if (adapter.config.use_dora)
    throw new Error(
      `${adapter.source}: adapter "${name}" is a DoRA adapter (use_dora: true); named adapters on one base run LoRA only. Load it alone (lora generate/eval --adapter ${adapter.source}), or merge it into the model with lora merge`,
    );
  if (isMutatingInit(adapter.config.init_lora_weights))
    throw new Error(
      `${adapter.source}: adapter "${name}" has init_lora_weights ${JSON.stringify(adapter.config.init_lora_weights)}: it works on its own residual of the base weights, not on a base shared with other adapters; convert it to a plain LoRA of the original base (lora train --convert-to-lora, or convertToLora in the library) and load that`,
    );
  const { layers: plan, extras } = adapterPlan(set.model, adapter.config, adapter.tensors, adapter.source);
  if (extras.any)
    throw new Error(
      `${adapter.source}: named adapters hold LoRA on Linear layers only; this adapter also has LoRA on an embedding, modules_to_save or trainable_token_indices: load it alone (--adapter PATH)`,
    );
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
    if (config.use_dora && MAGNITUDE.test(key)) continue; // DoRA's magnitudes: not part of ΔW = s·B·A
    const role = extraKeyRole(key, config);
    if (role === "whole") continue; // stored whole: not a low-rank update
    const m = role ? [key, role.path, role.which] : KEY.exec(key);
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

/**
 * DoRA's magnitude of one layer, checked: a float [out] with finite values, present exactly when the
 * config says use_dora. Returns it as a trainable f32 tensor, undefined for a LoRA layer, or false (and
 * records why) when it is wrong.
 */
function doraMagnitude(
  path: string,
  e: SafetensorsTensor | undefined,
  out: number,
  config: LoraConfig,
  errors: string[],
  damaged: string[],
): Tensor | undefined | false {
  const name = `"${path}.lora_magnitude_vector"`;
  if (!config.use_dora) {
    if (!e) return undefined;
    errors.push(
      `${name} is a DoRA magnitude, but adapter_config.json has use_dora false; set "use_dora": true`,
    );
    return false;
  }
  if (!e) {
    errors.push(`"${path}" has no lora_magnitude_vector, which a DoRA adapter (use_dora: true) needs`);
    return false;
  }
  if (e.shape.length !== 1 || e.shape[0] !== out) {
    errors.push(`${name} has shape ${shapeStr(e.shape)}, expected ${shapeStr([out])}`);
    return false;
  }
  let ok = true;
  if (!FLOAT_DTYPES.includes(e.dtype)) {
    damaged.push(`${name} is stored as ${e.dtype}; DoRA magnitudes are floats (${FLOAT_DTYPES.join(", ")})`);
    ok = false;
  }
  const bad = describeNonFinite(e);
  if (bad) {
    damaged.push(`${name} ${bad}`);
    ok = false;
  }
  return ok ? new Tensor(tensorToFloat32(e), [out], true) : false;
}
