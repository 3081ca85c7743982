/**
 * The KV caches of many sequences in one pair of arrays per layer, [positions, H, D] each: a cache made
 * with a pool (`new KVCache({ pool })`) is a region of consecutive positions, the same region in every
 * layer. A batched decode hands its kernel the pool and each row's region (autograd/rows.ts
 * attentionRows), not two arrays per row: no typed array is made per row and layer in JS, nor read
 * through N-API (stories260K, 16 rows, a Xeon: the decode step 0.68 -> 0.62 ms in process).
 *
 * Regions come first-fit from a free list, merged with their neighbours when released. When none fits,
 * the pool doubles: every layer's arrays are copied into larger ones at the same offsets (so a region
 * stays where it was; views of the old arrays keep the old values). It never shrinks: it holds about
 * twice what its busiest moment held, and a server's next burst allocates nothing.
 */
import { check } from "../tensor/shape.js";

interface Layer {
  row: number; // H * D
  keys: Float32Array; // [positions, row]
  values: Float32Array;
}

export class KVPool {
  private size = 0;
  private used = 0;
  private readonly layers: Layer[] = [];
  /** Free regions, by offset; neighbours are merged. */
  private readonly free: { at: number; n: number }[] = [];

  /** Positions the pool holds (free or not). */
  get positions(): number {
    return this.size;
  }

  /** Positions held by caches. */
  get inUse(): number {
    return this.used;
  }

  /** A region of n positions: its first position. */
  allocate(n: number): number {
    check(Number.isInteger(n) && n > 0, () => `KVPool: cannot allocate ${n} positions`);
    let i = this.free.findIndex((f) => f.n >= n);
    if (i < 0) {
      this.grow(n);
      i = this.free.findIndex((f) => f.n >= n);
    }
    const f = this.free[i]!;
    const at = f.at;
    if (f.n === n) this.free.splice(i, 1);
    else {
      f.at += n;
      f.n -= n;
    }
    this.used += n;
    return at;
  }

  /** Returns a region that `allocate` gave. */
  release(at: number, n: number): void {
    this.addFree(at, n);
    this.used -= n;
  }

  /** Layer l's keys and values, [positions, row] each, made at the layer's first use. */
  layer(l: number, row: number): Layer {
    let e = this.layers[l];
    if (!e) {
      e = { row, keys: new Float32Array(this.size * row), values: new Float32Array(this.size * row) };
      this.layers[l] = e;
    }
    check(
      e.row === row,
      () => `KVPool: layer ${l} holds rows of ${e.row} values, not ${row}; use one pool per model`,
    );
    return e;
  }

  /** Copies positions [from, from + n) to [to, to + n) in every layer. */
  move(from: number, to: number, n: number): void {
    for (const e of this.layers) {
      if (!e) continue;
      e.keys.copyWithin(to * e.row, from * e.row, (from + n) * e.row);
      e.values.copyWithin(to * e.row, from * e.row, (from + n) * e.row);
    }
  }

  private grow(n: number): void {
    const old = this.size;
    const size = Math.max(2 * old, old + n, 64);
    for (const e of this.layers) {
      if (!e) continue;
      const keys = new Float32Array(size * e.row);
      const values = new Float32Array(size * e.row);
      keys.set(e.keys);
      values.set(e.values);
      e.keys = keys;
      e.values = values;
    }
    this.size = size;
    this.addFree(old, size - old);
  }

  private addFree(at: number, n: number): void {
    let i = 0;
    while (i < this.free.length && this.free[i]!.at < at) i++;
    const prev = this.free[i - 1];
    const next = this.free[i];
    check(
      at >= 0 && at + n <= this.size && (!prev || prev.at + prev.n <= at) && (!next || at + n <= next.at),
      () => `KVPool: positions [${at}, ${at + n}) are not a region in use`,
    );
    if (prev && prev.at + prev.n === at) {
      prev.n += n;
      if (next && prev.at + prev.n === next.at) {
        prev.n += next.n;
        this.free.splice(i, 1);
      }
    } else if (next && at + n === next.at) {
      next.at = at;
      next.n += n;
    } else this.free.splice(i, 0, { at, n });
  }
}
