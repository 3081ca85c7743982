/**
 * What a LoRA config adapts besides Linear layers, applied in PEFT's order: LoRA on the targeted
 * embeddings (LoRAEmbedding), then modules_to_save (trained copies), then trainable_token_indices
 * (TrainableTokensEmbedding, and TrainableTokensHead on a head that still shares the table). Fresh (a
 * new run) or with an adapter's weights (checked beforehand by io/peft-extras.ts).
 */
import { Embedding, Linear } from "../nn/layers.js";
import { type Module, setSubmodule } from "../nn/module.js";
import type { Rng } from "../tensor/random.js";
import type { Tensor } from "../tensor/tensor.js";
import type { LoraConfig } from "./config.js";
import { LoRAEmbedding } from "./embedding.js";
import { patternValue } from "./inject.js";
import { LoRALinear } from "./layer.js";
import { applyModulesToSave, modulesToSaveMatches, unmatchedModulesToSave } from "./modules-to-save.js";
import { TokenAdapter, TrainableTokensEmbedding, TrainableTokensHead } from "./trainable-tokens.js";

/** An adapter's weights for these parts, by module path (full parameter path for modules_to_save). */
export interface ExtraWeights {
  embeddings: ReadonlyMap<string, { A: Tensor; B: Tensor }>;
  saved: ReadonlyMap<string, Float32Array>;
  tokens: ReadonlyMap<string, Tensor>;
}

const INPUT_EMBEDDINGS = ["embed_tokens", "wte", "word_embeddings"];

/** The embeddings trainable_token_indices names, by path, with their token ids. Throws for a name that matches none. */
export function trainableTokenTargets(model: Module, config: LoraConfig): [string, number[]][] {
  const spec = config.trainable_token_indices;
  if (!spec) return [];
  const embeddings = model
    .namedModules()
    .filter(([p, m]) => (m instanceof Embedding || m instanceof LoRAEmbedding) && !p.endsWith(".base_layer"));
  if (Array.isArray(spec)) {
    const input = embeddings.find(([p]) => INPUT_EMBEDDINGS.includes(p.split(".").pop()!));
    if (!input)
      throw new Error(
        `trainable_token_indices: the model has no input embedding (${INPUT_EMBEDDINGS.join(", ")}); name it: {"<embedding>": [ids]}`,
      );
    return [[input[0], spec]];
  }
  return Object.entries(spec).map(([name, ids]) => {
    const hit = embeddings.find(([p]) => p.endsWith(name));
    if (!hit)
      throw new Error(
        `trainable_token_indices: "${name}" is not an embedding of this model (embeddings: ${embeddings.map(([p]) => p).join(", ")})`,
      );
    return [hit[0], ids];
  });
}

/**
 * Wraps what the config adapts besides Linear layers (after the model is frozen); returns the paths.
 * `embeddings`: the embedding targets, as findEmbeddingTargets found them before the Linear layers were wrapped.
 */
export function applyExtras(
  model: Module & { headName?: string },
  config: LoraConfig,
  embeddings: readonly string[],
  rng: Rng,
  weights?: ExtraWeights,
): string[] {
  const paths: string[] = [];
  const before = new Map(model.namedModules());
  for (const path of embeddings) {
    const base = before.get(path) as Embedding;
    const r = patternValue(path, config.rank_pattern, config.r);
    const alpha = patternValue(path, config.alpha_pattern, config.lora_alpha);
    const opts = { r, alpha, rslora: config.use_rslora, rng };
    const given = weights?.embeddings.get(path);
    const layer = given
      ? LoRAEmbedding.withWeights(base, given.A, given.B, opts)
      : LoRAEmbedding.fromBase(base, opts);
    setSubmodule(model, path, layer);
    paths.push(path);
  }
  const names = config.modules_to_save ?? [];
  if (names.length > 0) {
    const missing = unmatchedModulesToSave(model, names);
    if (missing.length > 0)
      throw new Error(
        `modules_to_save ${JSON.stringify(missing)} matched no module; name modules of the model (lm_head, norm, ...)`,
      );
    for (const [path, m] of modulesToSaveMatches(model, names)) {
      const adapted = m.namedModules().find(([, x]) => x instanceof LoRALinear || x instanceof LoRAEmbedding);
      if (adapted)
        throw new Error(
          `modules_to_save "${path}" is also adapted by LoRA (target_modules); a module is trained one way: drop it from one of them`,
        );
    }
    paths.push(...applyModulesToSave(model, names, weights?.saved));
  }
  const modules = new Map(model.namedModules());
  for (const [path, ids] of trainableTokenTargets(model, config)) {
    const base = modules.get(path);
    if (!(base instanceof Embedding))
      throw new Error(
        `trainable_token_indices: ${path} is already adapted (a LoRA target or in modules_to_save); give one of them`,
      );
    const adapter = new TokenAdapter(base, ids, weights?.tokens.get(path));
    setSubmodule(model, path, new TrainableTokensEmbedding(adapter));
    paths.push(path);
    const head = model.headName ? modules.get(model.headName) : undefined;
    if (head instanceof Linear && head.weight === base.weight) {
      setSubmodule(model, model.headName!, new TrainableTokensHead(head, adapter));
      paths.push(model.headName!);
    }
  }
  return paths;
}

/** Writes trainable tokens into their tables and unwraps them (the LoRA layers are fused by inject.ts). */
export function fuseExtras(model: Module): void {
  for (const [path, m] of model.namedModules()) {
    if (m instanceof TrainableTokensHead) setSubmodule(model, path, m.fuse());
  }
  for (const [path, m] of model.namedModules()) {
    if (m instanceof TrainableTokensEmbedding) setSubmodule(model, path, m.fuse());
  }
}
