/**
 * Model surgery: find the Linear layers a LoraConfig targets, freeze everything, and wrap each
 * target in a LoRALinear. Also merging, fusing and PEFT's trainable-parameter report.
 */
import { Embedding, Linear } from "../nn/layers.js";
import { type Module, setSubmodule } from "../nn/module.js";
import { Rng } from "../tensor/random.js";
import { Tensor } from "../tensor/tensor.js";
import { LORA_DEFAULTS, type LoraConfig, layerInit } from "./config.js";
import { DoRALinear } from "./dora.js";
import { LoRAEmbedding, loraEmbeddings } from "./embedding.js";
import { applyExtras, fuseExtras } from "./extras.js";
import type { LoraInit } from "./init.js";
import { LoRALinear } from "./layer.js";
import { untiedSavedModules } from "./modules-to-save.js";
import { MultiLoRALinear } from "./multi-layer.js";

/** A model LoRA can be applied to: any module tree, optionally naming its output head. */
export interface Adaptable extends Module {
  readonly headName?: string;
}

/** The block index in a path like "model.layers.3.self_attn.q_proj" or "transformer.h.3.attn.c_attn". */
export function layerIndex(path: string): number | null {
  const m = /\.(?:layers|h|blocks|layer)\.(\d+)\./.exec(`.${path}.`);
  return m ? Number(m[1]) : null;
}

/** PEFT's matching: a list entry matches the exact name or a ".suffix"; a string is a full-match regex. */
function matches(path: string, key: string): boolean {
  return path === key || path.endsWith(`.${key}`);
}

function fullMatch(pattern: string, path: string): boolean {
  try {
    return new RegExp(`^(?:${pattern})$`).test(path);
  } catch (e) {
    throw new Error(
      `target_modules: "${pattern}" is not a valid regular expression: ${(e as Error).message}`,
    );
  }
}

function selected(path: string, spec: string[] | string): boolean {
  return typeof spec === "string" ? fullMatch(spec, path) : spec.some((k) => matches(path, k));
}

/** Per-module value from rank_pattern / alpha_pattern (exact, suffix, or regex key), else the fallback. */
export function patternValue(
  path: string,
  pattern: Record<string, number> | undefined,
  fallback: number,
): number {
  for (const [key, value] of Object.entries(pattern ?? {})) {
    if (matches(path, key) || fullMatch(`(?:.*\\.)?(?:${key})`, path)) return value;
  }
  return fallback;
}

/** The Linear layers a config targets, by path; throws listing what exists when a target matches nothing. */
export function findTargets(model: Adaptable, config: LoraConfig): [string, Linear][] {
  return findLayerTargets(model, config).filter((e): e is [string, Linear] => e[1] instanceof Linear);
}

/** The Embedding layers a config targets (embed_tokens, wte), by path. */
export function findEmbeddingTargets(model: Adaptable, config: LoraConfig): [string, Embedding][] {
  return findLayerTargets(model, config).filter((e): e is [string, Embedding] => e[1] instanceof Embedding);
}

function findLayerTargets(model: Adaptable, config: LoraConfig): [string, Linear | Embedding][] {
  const embeddings = model
    .namedModules()
    .filter((e): e is [string, Embedding] => e[1] instanceof Embedding && !e[0].endsWith(".base_layer"));
  const linears: [string, Linear | Embedding][] = [...linearLayers(model), ...embeddings];
  const head = model.headName;
  const spec = config.target_modules;
  const layers = config.layers_to_transform;
  const pick = (path: string) => {
    if (spec === "all-linear")
      return !embeddings.some(([p]) => p === path) && path !== head && !path.endsWith(`.${head}`);
    return selected(path, spec);
  };
  const found = linears.filter(([path]) => {
    if (!pick(path)) return false;
    if (config.exclude_modules && selected(path, config.exclude_modules)) return false;
    if (layers && layers.length > 0) {
      const i = layerIndex(path);
      return i !== null && layers.includes(i);
    }
    return true;
  });
  const names = [...new Set(linears.map(([p]) => p.split(".").pop()!))];
  const available = `available linear modules: ${names.join(", ")} (e.g. ${linears[0]?.[0] ?? "none"})`;
  if (found.length === 0) {
    const restricted = layers?.length ? ` in layers [${layers.join(", ")}]` : "";
    throw new Error(
      `LoRA target_modules ${JSON.stringify(spec)} matched no module${restricted}; ${available}`,
    );
  }
  // A misspelled entry must not hide behind one that matches.
  if (Array.isArray(spec)) {
    const missing = spec.filter((k) => !linears.some(([p]) => matches(p, k)));
    if (missing.length > 0) {
      throw new Error(`LoRA target_modules ${JSON.stringify(missing)} matched no module; ${available}`);
    }
  }
  return found;
}

/**
 * Freezes the model and wraps every targeted Linear in a LoRALinear (a DoRALinear with use_dora).
 * Returns the wrapped paths. Only the LoRA A and B matrices (and DoRA's magnitudes) require grad afterwards.
 */
export function applyLoRA(
  model: Adaptable,
  config: LoraConfig,
  opts: { rng?: Rng; init?: LoraInit } = {},
): string[] {
  if (model.namedModules().some(([, m]) => m instanceof LoRALinear || m instanceof LoRAEmbedding)) {
    throw new Error("the model already has LoRA layers; load a fresh base model to apply another config");
  }
  const targets = findTargets(model, config);
  const embeddings = findEmbeddingTargets(model, config).map(([p]) => p);
  model.freeze();
  const rng = opts.rng ?? new Rng(0);
  const init = opts.init ?? layerInit(config);
  for (const [path, linear] of targets) {
    const r = patternValue(path, config.rank_pattern, config.r);
    const alpha = patternValue(path, config.alpha_pattern, config.lora_alpha);
    const layer = (config.use_dora ? DoRALinear : LoRALinear).fromBase(linear, {
      r,
      alpha,
      dropout: config.lora_dropout ?? LORA_DEFAULTS.lora_dropout,
      rslora: config.use_rslora,
      init,
      rng,
    });
    setSubmodule(model, path, layer);
  }
  return [...targets.map(([p]) => p), ...applyExtras(model, config, embeddings, rng)];
}

/**
 * The model's Linear layers by path. A layer wrapped for named adapters (MultiLoRALinear) counts as
 * its base layer at the wrapper's path, so adapters are matched against the same paths as on the base.
 */
export function linearLayers(model: Module): [string, Linear][] {
  const out: [string, Linear][] = [];
  const wrapped = new Set<string>();
  for (const [path, m] of model.namedModules()) {
    if (m instanceof MultiLoRALinear) {
      out.push([path, m.base_layer]);
      wrapped.add(`${path}.base_layer`);
    } else if (m instanceof Linear && !wrapped.has(path)) out.push([path, m]);
  }
  return out;
}

/** Every LoRA layer in the model, with its path. */
export function loraLayers(model: Module): [string, LoRALinear][] {
  return model.namedModules().filter((e): e is [string, LoRALinear] => e[1] instanceof LoRALinear);
}

/** Sets every LoRA layer's dropout, drawing all masks from one stream (which a checkpoint can save). */
export function setLoraDropout(model: Module, p: number, rng: Rng): void {
  for (const [, layer] of loraLayers(model)) layer.setDropout(p, rng);
}

/**
 * Merges every LoRA layer into its base weight (each refuses a second merge). A base weight that
 * another module shares (a head tied to the embedding) is first copied, so the merge changes only the
 * adapted layer: the model is untied there. Returns the paths of the layers that were untied (their
 * checkpoint must then store the weight and say so, e.g. tie_word_embeddings: false).
 */
export function mergeLoRA(model: Module): string[] {
  const holders = new Map<Tensor, number>();
  for (const [, m] of model.namedModules())
    for (const v of Object.values(m)) if (v instanceof Tensor) holders.set(v, (holders.get(v) ?? 0) + 1);
  const untied: string[] = untiedSavedModules(model);
  const layers: [string, LoRALinear | LoRAEmbedding][] = [...loraLayers(model), ...loraEmbeddings(model)];
  for (const [path, layer] of layers) {
    const w = layer.base_layer.weight;
    if ((holders.get(w) ?? 0) > 1) {
      layer.base_layer.weight = w.clone(false);
      untied.push(path);
    }
    layer.merge();
  }
  return untied;
}

export function unmergeLoRA(model: Module): void {
  for (const [, layer] of loraLayers(model)) layer.unmerge();
  for (const [, layer] of loraEmbeddings(model)) layer.unmerge();
}

/**
 * Replaces every LoRA layer by a plain Linear (or Embedding) holding the merged weight, and writes
 * trainable tokens into their table (PEFT's merge_and_unload).
 */
export function fuseLoRA(model: Module): void {
  for (const [path, layer] of loraLayers(model)) setSubmodule(model, path, layer.fuse());
  for (const [path, layer] of loraEmbeddings(model)) setSubmodule(model, path, layer.fuse());
  fuseExtras(model);
}

export interface ParamReport {
  trainable: number;
  total: number;
  percent: number;
  /** PEFT's line: "trainable params: N || all params: M || trainable%: P". */
  line: string;
}

export function parameterReport(model: Module): ParamReport {
  let trainable = 0;
  let total = 0;
  for (const p of model.parameters()) {
    total += p.size;
    if (p.requiresGrad) trainable += p.size;
  }
  const percent = total === 0 ? 0 : (100 * trainable) / total;
  const fmt = (n: number) => n.toLocaleString("en-US");
  return {
    trainable,
    total,
    percent,
    line: `trainable params: ${fmt(trainable)} || all params: ${fmt(total)} || trainable%: ${percent.toFixed(4)}`,
  };
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/**
 * The config as PEFT must see it to adapt the same modules of the whole multimodal model when only the
 * module tree under `scope` (its text model) was built here: target_modules becomes a full-match regex
 * within `scope` (PEFT would match a plain list, or all-linear, in the vision tower too), with the
 * adapted layers' indexes in it when layers_to_transform chose them (PEFT ignores that field for a
 * regex). The regex is checked to select exactly the adapted modules here; if the adapted set is not
 * names × layers, it lists their paths.
 */
export function scopeTargets(model: Module, config: LoraConfig, scope: string): LoraConfig {
  const paths = loraLayers(model).map(([p]) => p);
  if (paths.length === 0) return config;
  const linears = model
    .namedModules()
    .filter(([, m]) => m instanceof Linear || m instanceof LoRALinear)
    .map(([p]) => p);
  const names = [...new Set(paths.map((p) => p.split(".").pop()!))].map(escapeRegex).join("|");
  const layers = [...new Set(paths.map(layerIndex))];
  const byLayer = config.layers_to_transform?.length && layers.every((i) => i !== null);
  const s = escapeRegex(scope);
  let regex = byLayer ? `${s}\\.layers\\.(${layers.join("|")})\\..*\\.(${names})` : `${s}\\..*\\.(${names})`;
  const picked = linears.filter((p) => new RegExp(`^(?:${regex})$`).test(p));
  const want = new Set(paths);
  if (picked.length !== want.size || !picked.every((p) => want.has(p)))
    regex = paths.map(escapeRegex).join("|");
  return { ...config, target_modules: regex, layers_to_transform: null, exclude_modules: null };
}
