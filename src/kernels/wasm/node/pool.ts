/**
 * The threaded wasm backend for Node: one shared WebAssembly.Memory, the same kernel module instantiated
 * on the main thread and in each worker_thread, and Atomics.wait/notify to hand out work. The main
 * thread runs part 0 itself and then waits. Importing this module registers it as the "wasm" backend
 * (src/node.ts and the CLI import it; the browser-safe core stays single-threaded).
 *
 * Threads: LORA_THREADS, or setThreads(n); default os.availableParallelism(). Workers start on the
 * first kernel that splits, and are unref()'d, so they never keep the process alive. Splits are static
 * (see ../threads.ts), so results are bit-identical for any thread count.
 */
import "./relaxed-flag.js";
import { availableParallelism } from "node:os";
import { Worker } from "node:worker_threads";
import type { Backend } from "../../backend.js";
import { registerBackend } from "../../index.js";
import { clampThreads, controlViews, dispatch } from "../atomics-pool.js";
import { READY } from "../control.js";
import {
  compileKernels,
  createWasmBackend,
  Heap,
  INITIAL_PAGES,
  MAX_PAGES,
  type ParallelKernel,
  simdSupported,
  type Threads,
  type WasmRuntime,
} from "../index.js";

export class WorkerPool implements Threads {
  count: number;
  private readonly workers: Worker[] = [];
  private readonly views: { ctrl: Int32Array; args: Float64Array };

  constructor(
    private readonly memory: WebAssembly.Memory,
    private readonly module: WebAssembly.Module,
    count: number,
  ) {
    this.count = clampThreads(count);
    this.views = controlViews(memory);
  }

  /** Starts workers 1..n-1 if they are not running yet, and waits until they are ready. */
  private ensureWorkers(n: number): void {
    while (this.workers.length < n - 1) {
      const tid = this.workers.length + 1;
      // execArgv: [] because the parent's (say `-e <script>`) would be run again by the worker; the
      // relaxed-SIMD V8 flag is process-wide and needs no argument here
      const w = new Worker(new URL("./worker.js", import.meta.url), {
        workerData: { memory: this.memory, module: this.module, tid },
        execArgv: [],
      });
      w.unref();
      this.workers.push(w);
    }
    const { ctrl } = this.views;
    for (let ready = Atomics.load(ctrl, READY); ready < this.workers.length; ) {
      Atomics.wait(ctrl, READY, ready, 10_000);
      const now = Atomics.load(ctrl, READY);
      if (now === ready)
        throw new Error(
          `wasm worker threads (${new URL("./worker.js", import.meta.url)}) did not start within 10 s`,
        );
      ready = now;
    }
  }

  run(heap: Heap, kernel: ParallelKernel, parts: number[][]): void {
    // no parts (an empty input): nothing to run, and PENDING must never go negative
    if (parts.length === 0) return;
    if (parts.length === 1) {
      heap.k[kernel]!(...parts[0]!);
      return;
    }
    this.ensureWorkers(parts.length);
    dispatch(this.views, heap, kernel, parts);
  }
}

/** LORA_THREADS, else the number of cores. */
export function defaultThreads(): number {
  const env = Number(process.env.LORA_THREADS);
  return env > 0 ? env : availableParallelism();
}

/** A threaded wasm backend with its own shared memory and workers (relaxed defaults to what validates). */
export function createThreadedWasm(opts: { relaxed?: boolean; threads?: number; name?: string } = {}): {
  backend: Backend;
  pool: () => WorkerPool;
  relaxed: () => boolean;
} {
  let runtime: (WasmRuntime & { threads: WorkerPool; relaxed: boolean }) | null = null;
  const rt = () => {
    if (!runtime) {
      const { module, relaxed } = compileKernels({ shared: true, relaxed: opts.relaxed });
      const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES, shared: true });
      const threads = new WorkerPool(memory, module, opts.threads ?? defaultThreads());
      runtime = { heap: new Heap(memory, module), threads, relaxed };
    }
    return runtime;
  };
  return {
    backend: createWasmBackend(opts.name ?? "wasm", rt),
    pool: () => rt().threads,
    relaxed: () => rt().relaxed,
  };
}

const shared = createThreadedWasm();
if (simdSupported()) registerBackend(shared.backend);

/** The threaded "wasm" backend this module registered. */
export const threadedWasmBackend: Backend = shared.backend;

/** Sets how many threads (main thread included) the threaded wasm backend splits work into. */
export function setThreads(n: number): void {
  shared.pool().count = clampThreads(n);
}

export function getThreads(): number {
  return shared.pool().count;
}
