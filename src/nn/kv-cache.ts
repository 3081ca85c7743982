/** Key/value cache for incremental decoding: per layer, keys and values of every position so far. */
import { check, sameShape, shapeStr } from "../tensor/shape.js";
import { Tensor } from "../tensor/tensor.js";
import type { KVPool } from "./kv-pool.js";

/**
 * One layer's keys or values, [B, capacity, H, D], with room past the cached positions: a step writes
 * its T new positions in place, and the buffer doubles when full. With B 1 (generation) the cache is
 * handed out as a view, so a decode of n tokens copies O(n) floats, not O(n^2) (a copy of the whole
 * cache per step was 11% of a batched serve step on stories260K); with B > 1 each step still returns a
 * compact copy.
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

/**
 * A KV cache: per layer, the keys and values of every position so far. On its own (`new KVCache()`) each
 * layer has its own buffer (Slots). In a pool (`new KVCache({ pool })`, nn/kv-pool.ts: a server's
 * sequences) the cache is a region of the pool's positions, the same in every layer, B 1 only: it takes
 * `expect` positions (when given) or 256 past its need, grows by moving to a region twice the size, and
 * `release` returns it.
 */
export class KVCache {
  private k: Slots[] = [];
  private v: Slots[] = [];
  /** Number of cached positions. */
  length = 0;
  private pending = 0;
  private readonly pool: KVPool | null;
  /** The expected final length (a hint: the pool region grows past it when needed). */
  private readonly expect: number;
  private at = 0;
  private capacity = 0;

  constructor({ pool, expect = Number.POSITIVE_INFINITY }: { pool?: KVPool; expect?: number } = {}) {
    this.pool = pool ?? null;
    this.expect = expect;
  }

  /** Where a pooled cache lies: positions [at, at + length) of `pool` (null outside a pool). */
  get region(): { pool: KVPool; at: number } | null {
    return this.pool ? { pool: this.pool, at: this.at } : null;
  }

  /**
   * Makes room for T more positions (a pooled cache may move to a new region: call it before a step's
   * appends, as RowCaches does, so no view of this step is moved under it; appends call it too).
   */
  reserve(T: number): void {
    const pool = this.pool;
    const need = this.length + T;
    if (!pool || need <= this.capacity) return;
    // the expected length at once where it is near (a 48-token request never moves), else doubling;
    // past the expected length, doubling again
    const grown = Math.max(2 * this.capacity, need + 256);
    const capacity = need <= this.expect ? Math.min(grown, this.expect) : grown;
    const at = pool.allocate(capacity);
    if (this.capacity > 0) {
      // the cached positions and any this step has appended so far
      pool.move(this.at, at, this.length + this.pending);
      pool.release(this.at, this.capacity);
    }
    this.at = at;
    this.capacity = capacity;
  }

  /** A pooled cache's T positions of this step, written into the pool by a kernel (attentionRows). */
  wrote(T: number): void {
    check(this.pool !== null && this.length + T <= this.capacity, () => "KVCache: wrote past the region");
    this.pending = T;
  }

  /** Returns a pooled cache's region to its pool; the cache is empty afterwards. */
  release(): void {
    if (this.pool && this.capacity > 0) this.pool.release(this.at, this.capacity);
    this.capacity = 0;
    this.length = 0;
    this.pending = 0;
  }

  /**
   * Appends this step's k, v: [B, T, H, D] for one layer and returns the whole cache so far as
   * [B, length + T, H, D]. Call commit() once every layer has appended. With B 1 the returned tensors
   * are views of the cache, which later appends leave as they are (they write past the views' end, or,
   * appending a step again before commit, into a new buffer). A pooled cache's views are of the pool:
   * use them within the step; a second append before commit writes the same positions again, and a
   * later step may move the cache (its old region then holds another sequence's positions).
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
    if (this.pool) return this.appendPooled(layer, k, v, B, T, row);
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

  // positions [length, length + T) of this cache's region in layer `layer` of the pool; a second append
  // before commit writes the same positions again
  private appendPooled(
    layer: number,
    k: Float32Array,
    v: Float32Array,
    B: number,
    T: number,
    row: number,
  ): [Float32Array, Float32Array] {
    check(
      B === 1 && k.length === T * row && v.length === k.length,
      () => `KVCache: a pooled cache takes one sequence (B 1) of [T, ${row}] values; got B ${B}, ${k.length}`,
    );
    this.reserve(T);
    const { keys, values } = this.pool!.layer(layer, row);
    const first = this.at * row;
    const end = (this.at + this.length) * row;
    keys.set(k, end);
    values.set(v, end);
    this.pending = T;
    return [keys.subarray(first, end + T * row), values.subarray(first, end + T * row)];
  }

  /** Marks the appended positions as part of the cache. */
  commit(): void {
    this.length += this.pending;
    this.pending = 0;
  }
}
