/**
 * The two halves of a thread pool over one shared WebAssembly.Memory, for any host that has workers and
 * Atomics (Node's worker_threads in node/pool.ts, a browser's Web Workers in web-pool.ts): the calling
 * thread hands parts 1..n-1 to the workers through the control block (control.ts), runs part 0 itself
 * and waits; each worker loops on its generation word. The calling thread blocks in Atomics.wait, so it
 * must be a thread that may block: Node's main thread or a Web Worker, never a page's main thread.
 */

import { ARGS, ERROR, GEN, MAX_THREADS, PENDING, READY, SLOT } from "./control.js";
import { CONTROL_OFFSET, Heap } from "./heap.js";
import { PARALLEL_KERNELS, type ParallelKernel } from "./threads.js";

/** The control block's views on the shared memory. */
export function controlViews(memory: WebAssembly.Memory): { ctrl: Int32Array; args: Float64Array } {
  return {
    ctrl: new Int32Array(memory.buffer, CONTROL_OFFSET, ARGS / 4),
    args: new Float64Array(memory.buffer, CONTROL_OFFSET + ARGS, SLOT * MAX_THREADS),
  };
}

/** Threads the pool may use: 1..MAX_THREADS. */
export function clampThreads(n: number): number {
  return Math.max(1, Math.min(MAX_THREADS, Math.floor(n)));
}

/**
 * Runs kernel(...parts[t]) with part t on worker t (workers 1..parts.length-1 must be running) and
 * part 0 on this thread; returns when all are done, and throws if a worker's part failed.
 */
export function dispatch(
  views: { ctrl: Int32Array; args: Float64Array },
  heap: Heap,
  kernel: ParallelKernel,
  parts: number[][],
): void {
  const fn = heap.k[kernel]!;
  const { ctrl, args } = views;
  const index = PARALLEL_KERNELS.indexOf(kernel);
  for (let t = 1; t < parts.length; t++) {
    const p = parts[t]!;
    args[SLOT * t] = index;
    args[SLOT * t + 1] = p.length;
    args.set(p, SLOT * t + 2);
  }
  Atomics.store(ctrl, ERROR, 0);
  Atomics.store(ctrl, PENDING, parts.length - 1);
  for (let t = 1; t < parts.length; t++) {
    Atomics.add(ctrl, GEN + t, 1);
    Atomics.notify(ctrl, GEN + t);
  }
  try {
    fn(...parts[0]!);
  } finally {
    // even when part 0 traps, wait for the workers: the next call reuses the control block
    for (let p = Atomics.load(ctrl, PENDING); p !== 0; p = Atomics.load(ctrl, PENDING)) {
      Atomics.wait(ctrl, PENDING, p);
    }
  }
  if (Atomics.load(ctrl, ERROR)) throw new Error(`wasm kernel ${kernel} failed in a worker thread`);
}

/**
 * A worker's side, never returning: instantiates the kernel module on the shared memory, counts itself
 * ready, then waits for its generation word to change, runs the kernel in its argument slot and counts
 * itself done.
 */
export function serveKernels(memory: WebAssembly.Memory, module: WebAssembly.Module, tid: number): never {
  const heap = new Heap(memory, module);
  const { ctrl } = controlViews(memory);
  const slot = new Float64Array(memory.buffer, CONTROL_OFFSET + ARGS + 8 * SLOT * tid, SLOT);
  Atomics.add(ctrl, READY, 1);
  Atomics.notify(ctrl, READY);
  let gen = 0;
  for (;;) {
    Atomics.wait(ctrl, GEN + tid, gen);
    gen = Atomics.load(ctrl, GEN + tid);
    try {
      const fn = heap.k[PARALLEL_KERNELS[slot[0]!]!]!;
      fn(...slot.subarray(2, 2 + slot[1]!));
    } catch {
      Atomics.store(ctrl, ERROR, 1);
    }
    if (Atomics.sub(ctrl, PENDING, 1) === 1) Atomics.notify(ctrl, PENDING);
  }
}
