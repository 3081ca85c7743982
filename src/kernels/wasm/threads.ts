/**
 * How the backend runs a kernel on several threads. The browser-safe core has the single-thread runner
 * and the Web Worker pool (web-pool.ts); src/kernels/wasm/node/pool.ts provides one backed by
 * worker_threads. Both pools share atomics-pool.ts over one shared memory.
 *
 * Splits are static and deterministic (contiguous ranges of output rows, columns, batch items or
 * heads), and no split divides a reduction, so results are bit-identical for any thread count.
 */
import type { Heap } from "./heap.js";

/** The kernels a pool may run on several threads; workers refer to them by index. */
export const PARALLEL_KERNELS = [
  "gemm",
  "attentionForward",
  "attentionBackward",
  "softmaxForward",
  "softmaxBackward",
  "crossEntropyForward",
  "crossEntropyBackward",
  "geluForward",
  "geluBackward",
  "siluForward",
  "siluBackward",
  "scale",
  "softcapForward",
  "softcapBackward",
  "adamw",
  "layerNormForward",
  "layerNormBackward",
  "rmsNormForward",
  "rmsNormBackward",
] as const;
export type ParallelKernel = (typeof PARALLEL_KERNELS)[number];

export interface Threads {
  /** The most parts a kernel may be split into (1 when single-threaded). */
  readonly count: number;
  /** Runs kernel(...parts[t]) for every t, concurrently; parts[0] on the calling thread. Returns when all are done. */
  run(heap: Heap, kernel: ParallelKernel, parts: number[][]): void;
}

export const singleThread: Threads = {
  count: 1,
  run(heap, kernel, parts) {
    const fn = heap.k[kernel]!;
    for (const args of parts) fn(...args);
  },
};

/** Splits [0, n) into at most `parts` contiguous ranges whose starts are multiples of `align`. */
export function ranges(n: number, parts: number, align = 1): [number, number][] {
  const units = Math.ceil(n / align);
  const p = Math.max(1, Math.min(parts, units));
  const out: [number, number][] = [];
  for (let t = 0; t < p; t++) {
    const lo = Math.min(n, Math.floor((units * t) / p) * align);
    const hi = Math.min(n, Math.floor((units * (t + 1)) / p) * align);
    if (hi > lo) out.push([lo, hi]);
  }
  return out;
}
