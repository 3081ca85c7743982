/** What every wasm op runs on: the heap (memory, instance, arena) and the threads it may split across. */
import type { Backend } from "../backend.js";
import type { Heap } from "./heap.js";
import { ranges, type Threads } from "./threads.js";

export interface WasmRuntime {
  heap: Heap;
  threads: Threads;
}

type Method = Exclude<
  keyof Backend,
  | "name"
  | "fastBf16"
  | "invariantRows"
  | "attentionRowsForward"
  | "loraRowsForward"
  | "linearRowsForward"
  | "ropeRows"
>;
/** A Backend method with the runtime as its first argument. */
export type WasmOp<K extends Method> = (rt: WasmRuntime, ...args: Parameters<Backend[K]>) => void;

/** Below this many inner-loop steps per thread, the row-split kernels stay on one thread. */
const MIN_WORK_PER_THREAD = 1 << 18;

/** Ranges of rows for a row-split kernel: one part unless each thread gets enough work. */
export function rowParts(threads: Threads, rows: number, workPerRow: number): [number, number][] {
  const t = Math.min(threads.count, Math.floor((rows * workPerRow) / MIN_WORK_PER_THREAD));
  return ranges(rows, Math.max(1, t));
}

/** Element ranges for an elementwise kernel, in whole blocks of 16 so every element takes the same SIMD
 *  or scalar path as in one call (the tail stays the tail): one part unless each thread gets enough work. */
export function elementParts(threads: Threads, n: number, workPerElement: number): [number, number][] {
  const t = Math.min(threads.count, Math.floor((n * workPerElement) / MIN_WORK_PER_THREAD));
  return ranges(n, Math.max(1, t), 16);
}

let chunkFloats = 8 << 20;

/** The most floats a kernel copies into the arena per operand at once (32 MiB): larger calls run in
 *  chunks, so the arena, which never shrinks, stays bounded. */
export function maxChunkFloats(): number {
  return chunkFloats;
}

/** Sets the chunking limit (floats per operand); returns the previous one. For tests. */
export function setMaxChunkFloats(n: number): number {
  const prev = chunkFloats;
  chunkFloats = Math.max(1, Math.floor(n));
  return prev;
}
