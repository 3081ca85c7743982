/**
 * The threaded wasm backend for browsers: a pool of Web Workers over one shared WebAssembly.Memory,
 * with the control block, the hand-out and the worker loop of the Node pool (atomics-pool.ts) and the
 * same static splits (threads.ts), so its results are bit-identical to one thread's.
 *
 * It needs a cross-origin isolated page (a shared memory is a SharedArrayBuffer) and must be driven from
 * a Web Worker: the calling thread blocks in Atomics.wait. The library does not know the page's bundle,
 * so the caller passes `spawn`, which starts one kernel worker whose script calls `serveKernels` with
 * the { memory, module, tid } it is posted (web/src/kernel-worker.ts). Workers start up front, in
 * `createWebThreadedWasm`, because a browser may start a worker only once its parent yields.
 */
import type { Backend } from "../backend.js";
import { clampThreads, controlViews, dispatch } from "./atomics-pool.js";
import { createWasmBackend, type WasmRuntime } from "./backend.js";
import { READY } from "./control.js";
import { Heap } from "./heap.js";
import { compileKernels, INITIAL_PAGES, MAX_PAGES } from "./module.js";
import type { ParallelKernel, Threads } from "./threads.js";

/** What the pool needs of a Web Worker (the DOM's Worker has it). */
export interface KernelWorker {
  postMessage(message: unknown): void;
  terminate(): void;
}

export class WebWorkerPool implements Threads {
  /** How many parts a kernel is split into: 1..workers + 1. */
  count: number;

  constructor(
    private readonly views: { ctrl: Int32Array; args: Float64Array },
    private readonly workers: KernelWorker[],
  ) {
    this.count = workers.length + 1;
  }

  /** The most threads it has: its workers and the calling thread. */
  get size(): number {
    return this.workers.length + 1;
  }

  run(heap: Heap, kernel: ParallelKernel, parts: number[][]): void {
    // no parts (an empty input): nothing to run, and PENDING must never go negative
    if (parts.length === 0) return;
    if (parts.length === 1) {
      heap.k[kernel]!(...parts[0]!);
      return;
    }
    if (parts.length > this.workers.length + 1)
      throw new Error(
        `wasm kernel ${kernel}: ${parts.length} parts, but the Web Worker pool has ${this.workers.length + 1} threads`,
      );
    dispatch(this.views, heap, kernel, parts);
  }

  /** Ends the kernel workers; the backend must not be used after. */
  terminate(): void {
    for (const w of this.workers) w.terminate();
  }
}

/** Starts `threads - 1` kernel workers on a new shared memory and resolves once all are serving. */
export async function createWebThreadedWasm(opts: {
  threads: number;
  /** Starts one kernel worker; it calls `onError` with the message if the worker fails to load. */
  spawn: (onError: (message: string) => void) => KernelWorker;
  relaxed?: boolean;
  name?: string;
  /** How long the workers may take to start (ms; default 20 s). */
  timeoutMs?: number;
}): Promise<{ backend: Backend; pool: WebWorkerPool; relaxed: boolean }> {
  const n = clampThreads(opts.threads);
  const { module, relaxed } = compileKernels({ shared: true, relaxed: opts.relaxed });
  const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES, shared: true });
  const heap = new Heap(memory, module);
  const views = controlViews(memory);
  const workers: KernelWorker[] = [];
  let failed: string | null = null;
  for (let tid = 1; tid < n; tid++) {
    const w = opts.spawn((message) => {
      failed = message || "unknown error";
    });
    w.postMessage({ memory, module, tid });
    workers.push(w);
  }
  const deadline = Date.now() + (opts.timeoutMs ?? 20_000);
  while (Atomics.load(views.ctrl, READY) < n - 1) {
    if (failed !== null || Date.now() > deadline) {
      for (const w of workers) w.terminate();
      throw new Error(
        failed !== null
          ? `a wasm kernel worker failed to start: ${failed}`
          : `${n - 1} wasm kernel workers did not start within ${(opts.timeoutMs ?? 20_000) / 1000} s`,
      );
    }
    await new Promise((r) => setTimeout(r, 5));
  }
  const pool = new WebWorkerPool(views, workers);
  const runtime: WasmRuntime = { heap, threads: pool };
  return { backend: createWasmBackend(opts.name ?? "wasm", () => runtime), pool, relaxed };
}
