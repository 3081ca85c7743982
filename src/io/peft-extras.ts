/**
 * The PEFT adapter keys beyond a Linear layer's lora_A/lora_B, as PEFT 0.21 writes them (no adapter name):
 *   base_model.model.<embedding>.lora_embedding_A                      [r, V]
 *   base_model.model.<embedding>.lora_embedding_B                      [C, r]
 *   base_model.model.<embedding>.base_layer.weight                     [V, C]  the whole table (save_embedding_layers)
 *   base_model.model.<module>.<parameter>                              modules_to_save, e.g. lm_head.weight
 *   base_model.model.<embedding>.token_adapter.trainable_tokens_delta  [n, C]  trainable_token_indices' rows
 * Reading checks them against the model and the config (problems are returned, for peft.ts to report with
 * the rest); writing gives them from a model that has them.
 */

import type { LoraConfig } from "../lora/config.js";
import { loraEmbeddings } from "../lora/embedding.js";
import { type ExtraWeights, trainableTokenTargets } from "../lora/extras.js";
import { findEmbeddingTargets, findTargets, patternValue } from "../lora/inject.js";
import { modulesToSaveMatches, savedModules, unmatchedModulesToSave } from "../lora/modules-to-save.js";
import { TrainableTokensEmbedding, tokenIndexProblems } from "../lora/trainable-tokens.js";
import { Embedding } from "../nn/layers.js";
import type { Module } from "../nn/module.js";
import { shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import {
  describeNonFinite,
  FLOAT_DTYPES,
  type SafetensorsTensor,
  type SerializableTensor,
  tensorToFloat32,
} from "./safetensors.js";

const PREFIX = "base_model.model.";
const EMBED_KEY = /^base_model\.model\.(.+)\.lora_embedding_(A|B)$/;
const BASE_KEY = /^base_model\.model\.(.+)\.base_layer\.weight$/;
const TOKENS_KEY = /^base_model\.model\.(.+)\.token_adapter\.trainable_tokens_delta$/;

export interface ExtraPlan {
  /** The keys these parts account for (peft.ts checks the rest as Linear LoRA keys). */
  keys: Set<string>;
  weights: ExtraWeights & { baseTables: Map<string, Float32Array> };
  /** Keys and shapes that do not fit the model or config. */
  errors: string[];
  /** Values that are not weights. */
  damaged: string[];
  /** Whether the adapter has anything beyond Linear LoRA layers. */
  any: boolean;
  /** The embeddings target_modules select (before any layer is wrapped). */
  embeddings: string[];
}

type Model = Module & { headName?: string };

/** Checks and reads the keys of embedding LoRA, base tables, modules_to_save and trainable tokens. */
export function planExtras(
  model: Model,
  config: LoraConfig,
  tensors: ReadonlyMap<string, SafetensorsTensor>,
): ExtraPlan {
  const errors: string[] = [];
  const damaged: string[] = [];
  const keys = new Set<string>();
  const embeddings = new Map<string, { A: Tensor; B: Tensor }>();
  const baseTables = new Map<string, Float32Array>();
  const saved = new Map<string, Float32Array>();
  const tokens = new Map<string, Tensor>();
  const modules = new Map<string, Module>(model.namedModules());

  const read = (key: string, want: number[], trainable: boolean): Tensor | null => {
    const e = tensors.get(key)!;
    keys.add(key);
    const fits = e.shape.length === want.length && e.shape.every((d, i) => d === want[i]);
    if (!fits) errors.push(`"${key}" has shape ${shapeStr(e.shape)}, expected ${shapeStr(want)}`);
    let ok = fits;
    if (!FLOAT_DTYPES.includes(e.dtype)) {
      damaged.push(`"${key}" is stored as ${e.dtype}; weights are floats (${FLOAT_DTYPES.join(", ")})`);
      ok = false;
    }
    const bad = describeNonFinite(e);
    if (bad) {
      damaged.push(`"${key}" ${bad}`);
      ok = false;
    }
    return ok ? new Tensor(tensorToFloat32(e), want, trainable) : null;
  };

  let embedTargets: [string, { weight: Tensor }][] = [];
  let linearTargets: string[] = [];
  try {
    embedTargets = findEmbeddingTargets(model, config);
    linearTargets = findTargets(model, config).map(([p]) => p);
  } catch {
    // peft.ts reports a target_modules that matches nothing
  }
  // ensure_weight_tying only changes anything on a model whose head shares the embedding's table
  const head = model.headName ? (modules.get(model.headName) as unknown as { weight?: Tensor }) : undefined;
  const tiedHead = model
    .namedModules()
    .some(([, m]) => m instanceof Embedding && head?.weight !== undefined && m.weight === head.weight);
  const tied = config.ensure_weight_tying === true && tiedHead;

  // LoRA on embeddings, and the tables saved beside them
  for (const [path, base] of embedTargets) {
    const [V, C] = base.weight.shape as [number, number];
    const r = patternValue(path, config.rank_pattern, config.r);
    const [ka, kb] = [`${PREFIX}${path}.lora_embedding_A`, `${PREFIX}${path}.lora_embedding_B`];
    if (!tensors.has(ka) || !tensors.has(kb)) {
      errors.push(
        `target_modules select the embedding ${path}, but the adapter has no ${tensors.has(ka) ? kb : ka}`,
      );
      if (tensors.has(ka)) keys.add(ka);
      if (tensors.has(kb)) keys.add(kb);
      continue;
    }
    const A = read(ka, [r, V], true);
    const B = read(kb, [C, r], true);
    if (A && B) embeddings.set(path, { A, B });
  }
  for (const [key] of tensors) {
    const m = EMBED_KEY.exec(key);
    if (m && !keys.has(key))
      errors.push(
        `"${key}": ${m[1]} is not an embedding that target_modules select${modules.has(m[1]!) ? "" : " (no such module)"}`,
      );
    const b = BASE_KEY.exec(key);
    if (b) {
      const path = b[1]!;
      const target =
        embedTargets.find(([p]) => p === path)?.[1] ??
        (linearTargets.includes(path) ? (modules.get(path) as unknown as { weight: Tensor }) : undefined);
      if (!target) {
        errors.push(`"${key}": ${path} is not a module that target_modules select`);
        keys.add(key);
        continue;
      }
      const t = read(key, [...target.weight.shape], false);
      if (t) baseTables.set(path, t.data);
    }
  }

  // modules_to_save
  const names = config.modules_to_save ?? [];
  if (names.length > 0) {
    for (const n of unmatchedModulesToSave(model, names))
      errors.push(`modules_to_save "${n}" matches no module of this model`);
    for (const [path, m] of modulesToSaveMatches(model, names)) {
      const adapted = [...linearTargets, ...embedTargets.map(([p]) => p)].filter(
        (p) => p === path || p.startsWith(`${path}.`),
      );
      if (adapted.length > 0) {
        errors.push(
          `modules_to_save "${path}" is also adapted by LoRA (${adapted.join(", ")}); PEFT trains a module one way`,
        );
        continue;
      }
      for (const [rel, p] of m.namedParameters()) {
        const key = `${PREFIX}${path}.${rel}`;
        if (!tensors.has(key)) {
          errors.push(`modules_to_save selects ${path}, but the adapter has no "${key}"`);
          continue;
        }
        const t = read(key, [...p.shape], true);
        if (t) saved.set(`${path}.${rel}`, t.data);
      }
    }
  }

  // trainable_token_indices
  let tokenTargets: [string, number[]][] = [];
  try {
    tokenTargets = trainableTokenTargets(model, config);
  } catch (e) {
    errors.push((e as Error).message);
  }
  for (const [path, ids] of tokenTargets) {
    const base = modules.get(path) as unknown as { weight: Tensor };
    const [V, C] = base.weight.shape as [number, number];
    for (const p of tokenIndexProblems(ids, V)) errors.push(`trainable_token_indices for ${path}: ${p}`);
    if (embedTargets.some(([p]) => p === path))
      errors.push(`${path} is both a LoRA target and has trainable_token_indices; give one of them`);
    if (modulesToSaveMatches(model, names).some(([p]) => p === path))
      errors.push(
        `${path} is both in modules_to_save and has trainable_token_indices; give one of them (as PEFT says)`,
      );
    const key = `${PREFIX}${path}.token_adapter.trainable_tokens_delta`;
    if (!tensors.has(key)) {
      errors.push(`trainable_token_indices are set for ${path}, but the adapter has no "${key}"`);
      continue;
    }
    const t = read(key, [ids.length, C], true);
    if (t) tokens.set(path, t);
  }
  for (const [key] of tensors) {
    const m = TOKENS_KEY.exec(key);
    if (m && !keys.has(key)) {
      errors.push(`"${key}": ${m[1]} has no trainable_token_indices in the config`);
      keys.add(key);
    }
  }

  const any = embedTargets.length > 0 || names.length > 0 || tokenTargets.length > 0 || baseTables.size > 0;
  if (tied && (embedTargets.length > 0 || names.length > 0))
    errors.push(
      "ensure_weight_tying: true on a model with a tied head (PEFT then ties adapters onto the head) is not supported here; re-save the adapter with ensure_weight_tying: false",
    );
  const paths = embedTargets.map(([p]) => p);
  return {
    keys,
    weights: { embeddings, baseTables, saved, tokens },
    errors,
    damaged,
    any,
    embeddings: paths,
  };
}

/** Writes the tables an adapter replaces into the model, in place (a head that shares a table follows it, as in PEFT). */
export function applyBaseTables(model: Module, tables: ReadonlyMap<string, Float32Array>): void {
  const modules = new Map<string, Module>(model.namedModules());
  for (const [path, values] of tables)
    (modules.get(path) as unknown as { weight: Tensor }).weight.assign(values);
}

/**
 * The model's embedding LoRA, modules_to_save and trainable-token tensors under PEFT's keys, and with
 * `saveEmbeddingLayers` the tables of the LoRA embeddings (PEFT's save_embedding_layers=True), as f32.
 */
export function extraTensors(
  model: Module,
  opts: { saveEmbeddingLayers?: boolean } = {},
): SerializableTensor[] {
  const out: SerializableTensor[] = [];
  const f32 = (name: string, t: Tensor): SerializableTensor => ({
    name,
    dtype: "F32",
    shape: [...t.shape],
    data: t.half ? t.toFloat32().data : t.data,
  });
  for (const [path, l] of loraEmbeddings(model)) {
    out.push(f32(`${PREFIX}${path}.lora_embedding_A`, l.lora_embedding_A));
    out.push(f32(`${PREFIX}${path}.lora_embedding_B`, l.lora_embedding_B));
    if (opts.saveEmbeddingLayers) out.push(f32(`${PREFIX}${path}.base_layer.weight`, l.base_layer.weight));
  }
  for (const [path, m] of savedModules(model))
    for (const [rel, p] of m.namedParameters()) out.push(f32(`${PREFIX}${path}.${rel}`, p));
  for (const [path, m] of model.namedModules())
    if (m instanceof TrainableTokensEmbedding)
      out.push(
        f32(`${PREFIX}${path}.token_adapter.trainable_tokens_delta`, m.token_adapter.trainable_tokens_delta),
      );
  return out;
}

/**
 * What an adapter holds beyond LoRA on Linear layers, in words (none: []), from its config and keys
 * alone: for the formats that carry only that (lora export's gguf and mlx).
 */
export function adapterExtras(config: LoraConfig, keys: Iterable<string>): string[] {
  const all = [...keys];
  const embedded = [...new Set(all.map((k) => EMBED_KEY.exec(k)?.[1]).filter((p) => p !== undefined))];
  const out: string[] = [];
  if (embedded.length > 0) out.push(`LoRA on the embedding ${embedded.join(", ")} (lora_embedding_A/B)`);
  if (all.some((k) => BASE_KEY.test(k))) out.push("a saved embedding table (base_layer.weight)");
  if (config.modules_to_save?.length) out.push(`modules_to_save ${JSON.stringify(config.modules_to_save)}`);
  if (config.trainable_token_indices) out.push("trainable_token_indices");
  return out;
}

/**
 * A key of an adapter read without a model (lora inspect): an embedding's LoRA factor (its update
 * scale·(B·A)ᵀ has the form of a Linear's with in = V, out = C), a tensor stored whole (a table, a
 * module to save, trained token rows: "whole"), or null for anything else.
 */
export function extraKeyRole(
  key: string,
  config: LoraConfig,
): { path: string; which: "A" | "B" } | "whole" | null {
  const m = EMBED_KEY.exec(key);
  if (m) return { path: m[1]!, which: m[2] as "A" | "B" };
  if (BASE_KEY.test(key) || TOKENS_KEY.test(key)) return "whole";
  const path = key.startsWith(PREFIX) ? key.slice(PREFIX.length) : key;
  const module = path.slice(0, path.lastIndexOf("."));
  if (config.modules_to_save?.some((n) => module.endsWith(n) || path.includes(`${n}.`))) return "whole";
  return null;
}
