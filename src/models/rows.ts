/**
 * A batched decode step's per-row state, passed down a model in place of one KVCache: row b is its
 * own sequence, with its own cache (ragged lengths), position and rotary pass. The attention of a
 * layer appends each row's new key and value to that row's cache and attends over it alone.
 */
import type { AttentionOptions } from "../autograd/ops.js";
import { attentionRows, type RowRotary, ropeRows } from "../autograd/rows.js";
import type { KVCache } from "../nn/kv-cache.js";
import { check, sameShape, shapeStr } from "../tensor/shape.js";
import type { Tensor } from "../tensor/tensor.js";

export class RowCaches {
  /** Each row's position: its cache's length before this step. */
  readonly offsets: number[];

  constructor(
    readonly caches: readonly KVCache[],
    /** Each row's rotary pass (unused by a model without RoPE). */
    readonly rots: readonly RowRotary[] = [],
  ) {
    this.offsets = caches.map((c) => c.length);
  }

  get size(): number {
    return this.caches.length;
  }

  /** x [B, 1, H, D] rotated, row b at its own position. */
  rope(x: Tensor): Tensor {
    return ropeRows(x, this.offsets, this.rots);
  }

  /** q [B, 1, Hq, D], k, v [B, 1, Hkv, D] -> [B, 1, Hq, D]: k, v appended to each row's cache, then its attention. */
  attend(layer: number, q: Tensor, k: Tensor, v: Tensor, opts: AttentionOptions = {}): Tensor {
    const [B, , H, D] = k.shape as [number, number, number, number];
    check(
      k.ndim === 4 && B === this.size && sameShape(k.shape, v.shape),
      () =>
        `RowCaches: need k, v [${this.size}, 1, H, D] alike; got ${shapeStr(k.shape)}, ${shapeStr(v.shape)}`,
    );
    const n = H * D;
    const keys: Float32Array[] = [];
    const values: Float32Array[] = [];
    for (let b = 0; b < B; b++) {
      const row = (t: Tensor) => t.data.subarray(b * n, (b + 1) * n);
      const [kb, vb] = this.caches[b]!.appendValues(layer, row(k), row(v), 1, 1, H, D);
      keys.push(kb);
      values.push(vb);
    }
    return attentionRows(q, keys, values, H, opts);
  }

  /** Marks this step's positions as cached, in every row. */
  commit(): void {
    for (const c of this.caches) c.commit();
  }
}
