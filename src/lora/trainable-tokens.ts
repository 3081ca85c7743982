/**
 * PEFT's trainable_token_indices: only the chosen rows of an embedding are trained (the answer PEFT
 * gives for added tokens). As in PEFT's TrainableTokensLayer, `trainable_tokens_delta` [n, C] holds the
 * rows' new values (not a difference: it starts as a copy of the original rows), and the forward uses
 * the table with those rows replaced. The module paths are PEFT's, so the tensor's key is
 * `<embedding>.token_adapter.trainable_tokens_delta`. A head tied to the embedding follows the trained
 * rows (PEFT ties a TrainableTokensWrapper onto it): `TrainableTokensHead`.
 */
import { add, embedding, matmul, mul } from "../autograd/ops.js";
import type { Embedding, Linear, LinearLike } from "../nn/layers.js";
import { Module } from "../nn/module.js";
import { Tensor } from "../tensor/tensor.js";

/** PEFT's TrainableTokensLayer: the base table and the trained rows. */
export class TokenAdapter extends Module {
  base_layer: Embedding;
  trainable_tokens_delta: Tensor; // [n, C]
  readonly token_indices: readonly number[];
  /** token id -> its row in trainable_tokens_delta, or -1 */
  readonly #slot: Int32Array;

  constructor(base: Embedding, indices: readonly number[], delta?: Tensor) {
    super();
    const [V, C] = base.weight.shape as [number, number];
    const problems = tokenIndexProblems(indices, V);
    if (problems.length > 0) throw new RangeError(`trainable_token_indices: ${problems.join("; ")}`);
    this.base_layer = base;
    this.token_indices = [...indices];
    this.#slot = new Int32Array(V).fill(-1);
    indices.forEach((id, i) => (this.#slot[id] = i));
    if (delta && (delta.shape[0] !== indices.length || delta.shape[1] !== C))
      throw new Error(
        `trainable_tokens_delta has shape [${delta.shape}], expected [${indices.length}, ${C}] (one row per token index)`,
      );
    this.trainable_tokens_delta =
      delta ?? new Tensor(originalRows(base.weight, indices), [indices.length, C], true);
  }

  /** ids -> the row of each id in the delta (or 0), and the [...shape, 1] masks of ids that are and are not trained. */
  lookup(ids: Int32Array, shape: readonly number[]): { rows: Int32Array; trained: Tensor; kept: Tensor } {
    const rows = new Int32Array(ids.length);
    const trained = new Float32Array(ids.length);
    const kept = new Float32Array(ids.length);
    ids.forEach((id, i) => {
      const s = id >= 0 && id < this.#slot.length ? this.#slot[id]! : -1;
      rows[i] = Math.max(s, 0);
      trained[i] = s >= 0 ? 1 : 0;
      kept[i] = s >= 0 ? 0 : 1;
    });
    const mask = [...shape, 1];
    return { rows, trained: new Tensor(trained, mask), kept: new Tensor(kept, mask) };
  }

  /** The table with the trained rows written in, as f32 values (for merging). */
  mergedTable(): Float32Array {
    const w = this.base_layer.weight;
    const C = w.shape[1]!;
    const out = (w.half ? w.toFloat32().data : w.data).slice();
    const d = this.trainable_tokens_delta.data;
    this.token_indices.forEach((id, i) => out.set(d.subarray(i * C, (i + 1) * C), id * C));
    return out;
  }
}

/** What is wrong with a list of token indices for a vocabulary of V (none: []). */
export function tokenIndexProblems(indices: readonly unknown[], V: number): string[] {
  const problems: string[] = [];
  if (indices.length === 0) problems.push("the list of token indices is empty");
  const bad = indices.filter((i) => !(Number.isInteger(i) && (i as number) >= 0 && (i as number) < V));
  if (bad.length > 0)
    problems.push(
      `${bad.slice(0, 5).map(String).join(", ")} ${bad.length > 1 ? "are" : "is"} not a token id in [0, ${V})`,
    );
  const dup = indices.filter((i, k) => indices.indexOf(i) !== k);
  if (dup.length > 0) problems.push(`${[...new Set(dup)].join(", ")} appear more than once`);
  return problems;
}

function originalRows(w: Tensor, indices: readonly number[]): Float32Array {
  const C = w.shape[1]!;
  const values = w.half ? w.toFloat32().data : w.data;
  const out = new Float32Array(indices.length * C);
  indices.forEach((id, i) => out.set(values.subarray(id * C, (id + 1) * C), i * C));
  return out;
}

/** The embedding with the trained rows replaced (PEFT's TrainableTokensWrapper around an embedding). */
export class TrainableTokensEmbedding extends Module {
  token_adapter: TokenAdapter;

  constructor(adapter: TokenAdapter) {
    super();
    this.token_adapter = adapter;
  }

  get weight(): Tensor {
    return this.token_adapter.base_layer.weight;
  }

  // ids: [...shape] -> [...shape, C]. The base rows of trained ids are multiplied by 0 and the others'
  // delta rows too, so untrained ids give the base's values exactly and only trained ids reach the delta.
  forward(ids: Int32Array, shape: readonly number[]): Tensor {
    const a = this.token_adapter;
    const { rows, trained, kept } = a.lookup(ids, shape);
    const base = embedding(a.base_layer.weight, ids, shape);
    const delta = embedding(a.trainable_tokens_delta, rows, shape);
    return add(mul(base, kept), mul(delta, trained));
  }

  /** The plain embedding with the rows written in, in place: a head tied to it follows, as in PEFT. */
  fuse(): Embedding {
    const base = this.token_adapter.base_layer;
    base.weight.assign(this.token_adapter.mergedTable());
    return base;
  }
}

/** A head tied to an embedding with trainable tokens: logits of the trained rows come from the delta. */
export class TrainableTokensHead extends Module implements LinearLike {
  base_layer: Linear;
  readonly #adapter: TokenAdapter;
  /** [n, V]: row i is one at column token_indices[i] */
  readonly #place: Tensor;
  /** [V]: 0 at the trained columns, else 1 */
  readonly #kept: Tensor;

  constructor(head: Linear, adapter: TokenAdapter) {
    super();
    this.base_layer = head;
    this.#adapter = adapter;
    const V = head.outFeatures;
    const n = adapter.token_indices.length;
    const place = new Float32Array(n * V);
    const kept = new Float32Array(V).fill(1);
    adapter.token_indices.forEach((id, i) => {
      place[i * V + id] = 1;
      kept[id] = 0;
    });
    this.#place = new Tensor(place, [n, V]);
    this.#kept = new Tensor(kept, [V]);
  }

  get inFeatures(): number {
    return this.base_layer.inFeatures;
  }

  get outFeatures(): number {
    return this.base_layer.outFeatures;
  }

  // x: [..., C] -> [..., V]
  forward(x: Tensor): Tensor {
    const y = this.base_layer.forward(x);
    const trained = matmul(x, this.#adapter.trainable_tokens_delta, { transB: true }); // [..., n]
    return add(mul(y, this.#kept), matmul(trained, this.#place));
  }

  /** The plain head: it shares the embedding's table, into which fuse() of the embedding writes the rows. */
  fuse(): Linear {
    return this.base_layer;
  }
}
