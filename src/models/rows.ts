/**
 * A batched step's per-sequence state, passed down a model in place of one KVCache: sequence b is its
 * own, with its own cache (ragged lengths), positions and rotary pass, and brings lengths[b] consecutive
 * rows to the step: 1 for a decode, a short prompt's tokens for a prefill that joins the batch
 * (autograd/invariant.ts invariantPrefill). The attention of a layer appends each sequence's new keys
 * and values to its cache and attends over it alone: the leading run of one-row sequences (the decodes)
 * through one attentionRows call, each other one through `attention` of that sequence, as its own
 * forward pass runs it (the same bits either way).
 */
import { type AttentionOptions, attention } from "../autograd/ops.js";
import { attentionRows, type RowRotary, ropeRows } from "../autograd/rows.js";
import type { KVCache } from "../nn/kv-cache.js";
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
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    let row = 0;
    this.caches.forEach((cache, b) => {
      const T = this.lengths[b]!;
      const part = (t: Tensor) => t.data.subarray(row * n, (row + T) * n);
      const [kb, vb] = cache.appendValues(layer, part(k), part(v), 1, T, H, D);
      keys.push(kb);
      values.push(vb);
      row += T;
    });
    if (this.singles === this.size) return attentionRows(q, keys, values, H, opts);
    // one-row sequences together; each longer one as `attention` of that sequence alone
    const out = floats(q.size);
    const qn = Hq * D;
    const s = this.singles;
    if (s > 0) {
      const head = new Tensor(q.data.subarray(0, s * qn), [s, 1, Hq, D]);
      out.set(attentionRows(head, keys.slice(0, s), values.slice(0, s), H, opts).data);
    }
    row = s;
    for (let b = s; b < this.size; b++) {
      const T = this.lengths[b]!;
      const Tk = keys[b]!.length / n;
      const qb = new Tensor(q.data.subarray(row * qn, (row + T) * qn), [1, T, Hq, D]);
      const y = attention(
        qb,
        new Tensor(keys[b]!, [1, Tk, H, D]),
        new Tensor(values[b]!, [1, Tk, H, D]),
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
