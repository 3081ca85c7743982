/** Autoregressive decoding with a KV cache: greedy at temperature 0, else temperature / top-k / top-p sampling. */
import { batchInvariant, invariantPrefill } from "../autograd/invariant.js";
import { noGrad } from "../autograd/tape.js";
import { KVCache } from "../nn/kv-cache.js";
import { Rng } from "../tensor/random.js";
import type { CausalLM } from "./model.js";

export interface SamplingOptions {
  maxTokens: number;
  /** 0 means greedy (argmax). */
  temperature?: number;
  /** Keep only the k most likely tokens (0 = off). */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p (1 = off). */
  topP?: number;
  seed?: number;
  /** Generation stops after emitting one of these. */
  stopIds?: readonly number[];
}

/** Picks the next token from one row of logits. */
export function sampleToken(logits: Float32Array, opts: SamplingOptions, rng: Rng): number {
  const temperature = opts.temperature ?? 0;
  if (temperature <= 0) {
    let best = 0;
    for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
    return best;
  }
  let order = Array.from(logits.keys()).sort((a, b) => logits[b]! - logits[a]!);
  const topK = opts.topK ?? 0;
  if (topK > 0) order = order.slice(0, topK);
  const max = logits[order[0]!]!;
  let probs = order.map((i) => Math.exp((logits[i]! - max) / temperature));
  let total = probs.reduce((s, p) => s + p, 0);
  const topP = opts.topP ?? 1;
  if (topP < 1) {
    let acc = 0;
    let keep = 0;
    while (keep < probs.length && acc < topP * total) acc += probs[keep++]!;
    order = order.slice(0, keep);
    probs = probs.slice(0, keep);
    total = acc;
  }
  let u = rng.uniform() * total;
  for (let i = 0; i < order.length; i++) {
    u -= probs[i]!;
    if (u <= 0) return order[i]!;
  }
  return order[order.length - 1]!;
}

/** Yields generated token ids one by one (the prompt is not repeated). */
export function* generate(
  model: CausalLM,
  prompt: readonly number[],
  opts: SamplingOptions,
): Generator<number> {
  if (prompt.length === 0)
    throw new Error("generate: the prompt is empty; give at least one token (e.g. BOS)");
  const rng = new Rng(opts.seed ?? 0);
  const cache = new KVCache();
  const V = model.vocabSize;
  let input = Int32Array.from(prompt);
  for (let n = 0; n < opts.maxTokens; n++) {
    // a short prompt's prefill (and every one-token step, whose products are row-invariant anyway) in
    // batch-invariant mode: the bits a batched server step gives it (autograd/invariant.ts)
    const step = () => model.forward(input, [1, input.length], cache);
    const logits = noGrad(() => (invariantPrefill(input.length) ? batchInvariant(step) : step()));
    const next = sampleToken(logits.data.subarray((input.length - 1) * V, input.length * V), opts, rng);
    yield next;
    if (opts.stopIds?.includes(next)) return;
    input = Int32Array.from([next]);
  }
}
