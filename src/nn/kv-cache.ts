/** Key/value cache for incremental decoding: per layer, keys and values of every position so far. */
import { Tensor } from "../tensor/tensor.js";

export class KVCache {
  private k: Float32Array[] = [];
  private v: Float32Array[] = [];
  /** Number of cached positions. */
  length = 0;
  private pending = 0;

  /**
   * Appends this step's k, v: [B, T, H, D] for one layer and returns the whole cache so far as
   * [B, length + T, H, D]. Call commit(T) once every layer has appended.
   */
  append(layer: number, k: Tensor, v: Tensor): [Tensor, Tensor] {
    const [B, T, H, D] = k.shape as [number, number, number, number];
    const past = this.length;
    const grow = (old: Float32Array | undefined, add: Float32Array) => {
      const out = new Float32Array(B * (past + T) * H * D);
      const oldRow = past * H * D;
      const addRow = T * H * D;
      for (let b = 0; b < B; b++) {
        if (old) out.set(old.subarray(b * oldRow, (b + 1) * oldRow), b * (oldRow + addRow));
        out.set(add.subarray(b * addRow, (b + 1) * addRow), b * (oldRow + addRow) + oldRow);
      }
      return out;
    };
    this.k[layer] = grow(this.k[layer], k.data);
    this.v[layer] = grow(this.v[layer], v.data);
    this.pending = T;
    const shape = [B, past + T, H, D];
    return [new Tensor(this.k[layer]!, shape), new Tensor(this.v[layer]!, shape)];
  }

  /** Marks the appended positions as part of the cache. */
  commit(): void {
    this.length += this.pending;
    this.pending = 0;
  }
}
