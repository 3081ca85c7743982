/** What every causal language model in models/ provides, and how its parameters are created. */
import type { KVCache } from "../nn/kv-cache.js";
import type { LinearLike } from "../nn/layers.js";
import type { Module } from "../nn/module.js";
import { Rng } from "../tensor/random.js";
import { Tensor } from "../tensor/tensor.js";

export interface CausalLM extends Module {
  readonly modelType: string;
  readonly vocabSize: number;
  readonly numLayers: number;
  /** The module path of the output head, which "all-linear" LoRA targeting leaves alone. */
  readonly headName: string;
  /** The output head [..., C] -> [..., V]: a Linear, or a LoRA wrapper when an adapter targets it. */
  readonly lm_head: LinearLike;
  /** ids: [B, T] -> logits [B, T, V]; the same as head(hidden(ids, shape, cache)). With a cache,
   *  positions continue after the cached ones. */
  forward(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor;
  /** ids: [B, T] -> hidden states [B, T, C] after the final norm: everything but the head. */
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor;
  /** hidden states [..., C] -> logits [..., V] (the lm head). */
  head(h: Tensor): Tensor;
}

/** What a parameter is, so a random initialiser can pick a sensible value. */
export type ParamKind = "weight" | "bias" | "norm" | "embedding";

/**
 * Creates a model parameter by its Hugging Face name and shape (Linear layout [out, in]).
 * A random factory makes fresh weights; a checkpoint loader (io/) looks the name up instead.
 */
export type ParamFactory = (name: string, shape: number[], kind: ParamKind) => Tensor;

/** Random weights, GPT-2 style: N(0, std²) matrices, unit norms, zero biases. Frozen by default. */
export function randomParams(seed = 0, std = 0.02): ParamFactory {
  const rng = new Rng(seed);
  return (_name, shape, kind) => {
    if (kind === "norm") return Tensor.full(shape, 1);
    if (kind === "bias") return Tensor.zeros(shape);
    return Tensor.randn(shape, rng, std);
  };
}

/** Integer config field with a check; HF configs are plain JSON, so every field is validated. */
export function intField(json: Record<string, unknown>, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    throw new Error(`config.json: "${key}" must be a positive integer, got ${JSON.stringify(json[key])}`);
  }
  return v;
}

export function numField(json: Record<string, unknown>, key: string, fallback?: number): number {
  const v = json[key] ?? fallback;
  if (typeof v !== "number" || !Number.isFinite(v)) {
    throw new Error(`config.json: "${key}" must be a number, got ${JSON.stringify(json[key])}`);
  }
  return v;
}
