/**
 * A batched step's per-sequence state, passed down a model in place of one KVCache: sequence b is its
 * own, with its own cache (ragged lengths), positions and rotary pass, and brings lengths[b] consecutive
 * rows to the step: 1 for a decode, a short prompt's tokens for a prefill that joins the batch
 * (autograd/invariant.ts invariantPrefill). The attention of a layer appends each sequence's new keys
 * and values to its cache and attends over it alone: with every cache in one pool (nn/kv-pool.ts, as a
 * server keeps them) the leading run of one-row sequences (the decodes) through one attentionRows call,
 * each other sequence through `attention` of that sequence, as its own forward pass runs it (the same
 * bits either way).
 */
import { type AttentionOptions, attention } from "../autograd/ops.js";
import { attentionRows, type RowRotary, ropeRows } from "../autograd/rows.js";
import type { KVCache } from "../nn/kv-cache.js";
import type { KVPool } from "../nn/kv-pool.js";
import { floats } from "../tensor/alloc.js";
import { check, sameShape, shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";

export class RowCaches {
  /** Each sequence's first position: its cache's length before this step. */
  readonly offsets: number[];
  /** Each sequence's rows in this step (1 each in a decode), consecutive in the batch. */
  readonly lengths: readonly number[];
  /** The total number of rows. */
  readonly rows: number;
  /** Sequences 0 .. singles - 1 bring one row each (a leading run, so their rows are rows 0 .. singles - 1). */
  private readonly singles: number;
  /** The pool every cache lies in, if they all lie in one. */
  private readonly pool: KVPool | null;
  /** With a pool: [first position, length] of each one-row sequence's cache (attentionRows' `at`). */
  private readonly at = new Int32Array(0);

  constructor(
    readonly caches: readonly KVCache[],
    /** Each sequence's rotary pass (unused by a model without RoPE). */
    readonly rots: readonly RowRotary[] = [],
    lengths?: readonly number[],
  ) {
    this.offsets = caches.map((c) => c.length);
    this.lengths = lengths ?? caches.map(() => 1);
    check(
      this.lengths.length === caches.length && this.lengths.every((t) => Number.isInteger(t) && t >= 1),
      () =>
        `RowCaches: need one length of at least 1 per cache; got ${this.lengths.length} for ${caches.length}`,
    );
    this.rows = this.lengths.reduce((s, t) => s + t, 0);
    const each = <T>(f: (b: number, t: number) => T) =>
      this.lengths.flatMap((T, b) => Array.from({ length: T }, (_, t) => f(b, t)));
    this.positions = lengths ? each((b, t) => this.offsets[b]! + t) : this.offsets;
    this.rowRots = lengths && rots.length > 0 ? each((b) => rots[b]!) : rots;
    const multi = this.lengths.findIndex((t) => t > 1);
    this.singles = multi < 0 ? this.lengths.length : multi;
    const pool = caches[0]?.region?.pool;
    this.pool = pool && caches.every((c) => c.region?.pool === pool) ? pool : null;
    if (this.pool) {
      // every region moved (if it must grow) before the first layer's append, then the decodes' places
      caches.forEach((c, b) => c.reserve(this.lengths[b]!));
      this.at = new Int32Array(new ArrayBuffer(8 * this.singles));
      for (let b = 0; b < this.singles; b++) {
        this.at[2 * b] = caches[b]!.region!.at;
        this.at[2 * b + 1] = caches[b]!.length;
      }
    }
  }

  get size(): number {
    return this.caches.length;
  }

  /** Each row's position (offsets[b] + t for row t of sequence b). */
  readonly positions: readonly number[];
  /** Each row's rotary pass (its sequence's). */
  private readonly rowRots: readonly RowRotary[];

  /** x [rows, 1, H, D] rotated, each row at its own position with its sequence's rotary pass. */
  rope(x: Tensor): Tensor {
    return ropeRows(x, this.positions, this.rowRots);
  }

  /**
   * q [rows, 1, Hq, D], k, v [rows, 1, Hkv, D] -> [rows, 1, Hq, D]: each sequence's k, v appended to its
   * cache, then its attention over the cache.
   */
  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
    const [N, , H, D] = k.shape as [number, number, number, number];
    const Hq = q.shape[2]!;
    check(
      k.ndim === 4 && N === this.rows && sameShape(k.shape, v.shape) && q.shape[0] === N,
      () =>
        `RowCaches: need q, k, v [${this.rows}, 1, H, D]; got ${shapeStr(q.shape)}, ${shapeStr(k.shape)}, ${shapeStr(v.shape)}`,
    );
    const n = H * D;
    const qn = Hq * D;
    const out = floats(q.size);
    // one-row sequences together, over the pool
    let s = 0;
    if (this.pool) {
      s = this.singles;
      const { keys, values } = this.pool.layer(layer, n);
      const head = (t: Tensor, w: number) => new Tensor(t.data.subarray(0, s * w), [s, 1, t.shape[2]!, D]);
      const y = attentionRows(head(q, qn), head(k, n), head(v, n), keys, values, this.at, opts);
      for (let b = 0; b < s; b++) this.caches[b]!.wrote(1);
      if (s === this.size) return y;
      out.set(y.data);
    }
    // each other one as `attention` of that sequence alone
    let row = s;
    for (let b = s; b < this.size; b++) {
      const T = this.lengths[b]!;
      const part = (t: Tensor, w: number) => t.data.subarray(row * w, (row + T) * w);
      const [kb, vb] = this.caches[b]!.appendValues(layer, part(k, n), part(v, n), 1, T, H, D);
      const Tk = kb.length / n;
      const y = attention(
        new Tensor(part(q, qn), [1, T, Hq, D]),
        new Tensor(kb, [1, Tk, H, D]),
        new Tensor(vb, [1, Tk, H, D]),
        opts,
      );
      out.set(y.data, row * qn);
      row += T;
    }
    return new Tensor(out, q.shape);
  }

  /** h [rows, 1, C] -> [size, 1, C]: each sequence's last row (whose logits it samples from). */
  lastRows(h: Tensor): Tensor {
    if (this.rows === this.size) return h;
    const C = h.shape[h.ndim - 1]!;
    const out = floats(this.size * C);
    let end = 0;
    this.lengths.forEach((T, b) => {
      end += T;
      out.set(h.data.subarray((end - 1) * C, end * C), b * C);
    });
    return new Tensor(out, [this.size, 1, C]);
  }

  /** Marks this step's positions as cached, in every sequence. */
  commit(): void {
    for (const c of this.caches) c.commit();
  }
}
