/** Key/value cache for incremental decoding: per layer, keys and values of every position so far. */
import { check, sameShape, shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";

/**
 * One layer's keys or values, [B, capacity, H, D], with room past the cached positions: a step writes
 * its T new positions in place, and the buffer doubles when full. With B 1 (generation, and every
 * sequence of a batched serve step) the cache is handed out as a view, so a decode of n tokens copies
 * O(n) floats, not O(n^2) (a copy of the whole cache per step was 11% of a batched serve step on
 * stories260K); with B > 1 each step still returns a compact copy.
 */
class Slots {
  private data = new Float32Array(0);
  private capacity = 0;
  /** Positions written so far (committed or not): a view handed out covers up to here. */
  private written = 0;

  constructor(
    private readonly B: number,
    private readonly row: number,
  ) {}

  fits(B: number, row: number): boolean {
    return B === this.B && row === this.row;
  }

  /** Writes add [B, T, H, D] at positions [past, past + T) and returns positions [0, past + T). */
  write(past: number, T: number, add: Float32Array): Float32Array {
    const { B, row } = this;
    const need = past + T;
    // positions written again (a step appended twice before commit) would change a view already handed
    // out: they go to a new buffer instead
    if (need > this.capacity || past < this.written) {
      const capacity = Math.max(need, 2 * this.capacity, 16);
      const grown = new Float32Array(B * capacity * row);
      this.copy(this.data, this.capacity, grown, capacity, 0, past);
      this.data = grown;
      this.capacity = capacity;
    }
    this.copy(add, T, this.data, this.capacity, past, T);
    this.written = need;
    if (B === 1) return this.data.subarray(0, need * row); // a view: the next write lands past its end
    const out = new Float32Array(B * need * row);
    this.copy(this.data, this.capacity, out, need, 0, need);
    return out;
  }

  /** The first n positions of each of the B rows of src [B, srcCap, row] to dst [B, dstCap, row] at `at`. */
  private copy(src: Float32Array, srcCap: number, dst: Float32Array, dstCap: number, at: number, n: number) {
    const { B, row } = this;
    for (let b = 0; b < B; b++)
      dst.set(src.subarray(b * srcCap * row, (b * srcCap + n) * row), (b * dstCap + at) * row);
  }
}

export class KVCache {
  private k: Slots[] = [];
  private v: Slots[] = [];
  /** Number of cached positions. */
  length = 0;
  private pending = 0;

  /**
   * Appends this step's k, v: [B, T, H, D] for one layer and returns the whole cache so far as
   * [B, length + T, H, D]. Call commit() once every layer has appended. With B 1 the returned tensors
   * are views of the cache, which later appends leave as they are (they write past the views' end, or,
   * appending a step again before commit, into a new buffer).
   */
  append(layer: number, k: Tensor, v: Tensor): [Tensor, Tensor] {
    check(
      k.ndim === 4 && sameShape(k.shape, v.shape),
      () =>
        `KVCache: v ${shapeStr(v.shape)} has another shape than k ${shapeStr(k.shape)}; both are [B, T, H, D]`,
    );
    const [B, T, H, D] = k.shape as [number, number, number, number];
    const [ks, vs] = this.appendValues(layer, k.data, v.data, B, T, H, D);
    const shape = [B, this.length + T, H, D];
    return [new Tensor(ks, shape), new Tensor(vs, shape)];
  }

  /**
   * `append` on the values alone (k, v: [B, T, H, D] each): returns the cache's keys and values so far,
   * [B, length + T, H, D] each. A batched decode appends one row this way per sequence and layer, with no
   * tensor made around either side.
   */
  appendValues(
    layer: number,
    k: Float32Array,
    v: Float32Array,
    B: number,
    T: number,
    H: number,
    D: number,
  ): [Float32Array, Float32Array] {
    const row = H * D;
    this.k[layer] ??= new Slots(B, row);
    this.v[layer] ??= new Slots(B, row);
    check(
      this.k[layer].fits(B, row) && this.v[layer].fits(B, row),
      () =>
        `KVCache: layer ${layer} holds another shape than [${B}, ${T}, ${H}, ${D}]; use one cache per batch`,
    );
    check(
      k.length === B * T * row && v.length === k.length,
      () =>
        `KVCache: k and v hold ${k.length} and ${v.length} values; [${B}, ${T}, ${H}, ${D}] needs ${B * T * row}`,
    );
    this.pending = T;
    return [this.k[layer].write(this.length, T, k), this.v[layer].write(this.length, T, v)];
  }

  /** Marks the appended positions as part of the cache. */
  commit(): void {
    this.length += this.pending;
    this.pending = 0;
  }
}
