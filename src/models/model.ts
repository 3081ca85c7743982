/** What every causal language model in models/ provides, and how its parameters are created. */
import { softcap } from "../autograd/ops.js";
import type { KVCache } from "../nn/kv-cache.js";
import type { LinearLike } from "../nn/layers.js";
import { Module } from "../nn/module.js";
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
  /** The module path of the text model inside a multimodal model whose other towers are not built
   *  (a gemma3 folder's model.language_model): adapters stay inside it, and their target_modules are
   *  written as a regex within it, so PEFT adapts the same modules of the whole model. */
  readonly adapterScope?: string;
  /** Final logit soft-capping (Gemma's final_logit_softcapping): head() gives cap · tanh(lm_head(h) / cap).
   *  Absent: none. */
  readonly logitSoftcap?: number;
  /** ids: [B, T] -> logits [B, T, V]; the same as head(hidden(ids, shape, cache)). With a cache,
   *  positions continue after the cached ones. */
  forward(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor;
  /** ids: [B, T] -> hidden states [B, T, C] after the final norm: everything but the head. */
  hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor;
  /** hidden states [..., C] -> logits [..., V] (the lm head, then the soft cap if the model has one). */
  head(h: Tensor): Tensor;
  /**
   * A batched step (families that have one: llama's, gpt2): ids, the next lengths[b] tokens (default 1:
   * a decode) of each of B sequences, consecutive, each at its own position with its own cache (ragged
   * lengths) -> logits [B, 1, V] of each sequence's last token (sequences of one token first share one
   * attention call). Run
   * under noGrad and batchInvariant (autograd/invariant.ts): row b then has the bits of the last row of
   * forward(its tokens, [1, lengths[b]], caches[b]) in batch-invariant mode, as `generate` runs a prefill
   * of up to INVARIANT_PREFILL tokens and every decode step.
   */
  decodeRows?(ids: Int32Array, caches: readonly KVCache[], lengths?: readonly number[]): Tensor;
}

/**
 * What every family's model class shares: the lm head's name, and forward = head(hidden(...)) with the
 * head a plain (or LoRA-wrapped) linear layer. A family writes its own hidden() and sizes.
 */
export abstract class CausalLMBase extends Module implements CausalLM {
  readonly headName = "lm_head";
  abstract readonly modelType: string;
  abstract readonly vocabSize: number;
  abstract readonly numLayers: number;
  abstract lm_head: LinearLike;
  readonly logitSoftcap?: number;
  abstract hidden(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor;

  // ids: [B, T] -> logits: [B, T, V]
  forward(ids: Int32Array, shape: readonly [number, number], cache?: KVCache): Tensor {
    return this.head(this.hidden(ids, shape, cache));
  }

  // [..., C] -> logits [..., V]
  head(h: Tensor): Tensor {
    const logits = this.lm_head.forward(h);
    return this.logitSoftcap ? softcap(logits, this.logitSoftcap) : logits;
  }
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

const MAX_SIZE = 2 ** 31 - 1;

/** A JSON value as an error message shows it: numbers as JS prints them, strings marked as strings. */
export function showValue(v: unknown): string {
  if (v === undefined) return "nothing (the field is missing)";
  if (typeof v === "number") return String(v);
  return `${JSON.stringify(v)}${typeof v === "string" ? " (a string)" : ""}`;
}

/**
 * Reads config.json fields with checks, collecting every problem; `done()` throws them all at once.
 * HF configs are plain JSON, so every field is validated: sizes are positive integers, epsilons
 * positive finite numbers, flags JSON booleans. A field that fails reads as a harmless
 * placeholder (1, or the fallback), so the checks after it still run. `fix` says what to do (io/ reads
 * adapter_config.json with it too).
 */
export class ConfigFields {
  /** Every problem so far; a helper that collects its own problems may push to it. */
  readonly problems: string[] = [];
  private readonly failed = new Set<string>();

  constructor(
    private readonly json: Record<string, unknown>,
    readonly source = "config.json",
    private readonly fix = "fix config.json, or re-download it with the model",
  ) {}

  /**
   * A size or count: a positive integer (absent or null: `fallback`) of at most 2^31 - 1, as token ids,
   * typed-array lengths and the kernels' indices are 32-bit: a larger dimension cannot work anyway.
   */
  size(key: string, fallback?: number): number {
    const v = this.json[key] ?? fallback;
    if (Number.isInteger(v) && (v as number) > 0 && (v as number) <= MAX_SIZE) return v as number;
    const range = Number.isInteger(v) && (v as number) > 0 ? ` up to ${MAX_SIZE}` : "";
    this.fail(key, `"${key}" must be a positive integer${range}, got ${showValue(this.json[key])}`);
    return 1;
  }

  /** A positive finite number, such as an epsilon (absent or null: `fallback`). */
  positive(key: string, fallback: number): number {
    const v = this.json[key] ?? fallback;
    if (typeof v === "number" && Number.isFinite(v) && v > 0) return v;
    this.fail(key, `"${key}" must be a positive finite number, got ${showValue(this.json[key])}`);
    return fallback;
  }

  /** A JSON boolean (absent or null: `fallback`). A string such as "false" is refused, never read as true. */
  flag(key: string, fallback = false): boolean {
    const v = this.json[key] ?? fallback;
    if (typeof v === "boolean") return v;
    this.fail(key, `"${key}" must be true or false (a JSON boolean), got ${showValue(this.json[key])}`);
    return fallback;
  }

  /**
   * Records `problem` unless `ok`. A check of fields read before (`uses`) is skipped when one of them
   * already failed, so one bad value is reported once, not again through each check built on it.
   */
  require(ok: boolean, problem: string, uses: string[] = []): void {
    if (!ok && !uses.some((k) => this.failed.has(k))) this.problems.push(problem);
  }

  private fail(key: string, problem: string): void {
    this.failed.add(key);
    this.problems.push(problem);
  }

  /** Throws every problem found, naming the file; does nothing when there are none. */
  done(): void {
    const n = this.problems.length;
    if (n === 0) return;
    const { source, fix, problems } = this;
    if (n === 1) throw new Error(`${source}: ${problems[0]}; ${fix}`);
    const list = problems.map((p) => `  - ${p}`).join("\n");
    throw new Error(`${source}: ${n} problems:\n${list}\n${fix[0]!.toUpperCase()}${fix.slice(1)}.`);
  }
}
