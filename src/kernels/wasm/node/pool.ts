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
import {
  CONTROL_OFFSET,
  compileKernels,
  createWasmBackend,
  Heap,
  INITIAL_PAGES,
  MAX_PAGES,
  PARALLEL_KERNELS,
  type ParallelKernel,
  simdSupported,
  type Threads,
  type WasmRuntime,
} from "../index.js";
import { ARGS, ERROR, GEN, MAX_THREADS, PENDING, READY, SLOT } from "./control.js";

export class WorkerPool implements Threads {
  count: number;
  private readonly workers: Worker[] = [];
  private readonly ctrl: Int32Array;
  private readonly args: Float64Array;

  constructor(
    private readonly memory: WebAssembly.Memory,
    private readonly module: WebAssembly.Module,
    count: number,
  ) {
    this.count = clampThreads(count);
    this.ctrl = new Int32Array(memory.buffer, CONTROL_OFFSET, ARGS / 4);
    this.args = new Float64Array(memory.buffer, CONTROL_OFFSET + ARGS, SLOT * MAX_THREADS);
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
    for (let ready = Atomics.load(this.ctrl, READY); ready < this.workers.length; ) {
      Atomics.wait(this.ctrl, READY, ready, 10_000);
      const now = Atomics.load(this.ctrl, READY);
      if (now === ready)
        throw new Error(
          `wasm worker threads (${new URL("./worker.js", import.meta.url)}) did not start within 10 s`,
        );
      ready = now;
    }
  }

  run(heap: Heap, kernel: ParallelKernel, parts: number[][]): void {
    const fn = heap.k[kernel]!;
    // no parts (an empty input): nothing to run, and PENDING must never go negative
    if (parts.length === 0) return;
    if (parts.length === 1) {
      fn(...parts[0]!);
      return;
    }
    this.ensureWorkers(parts.length);
    const { ctrl, args } = this;
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
}

function clampThreads(n: number): number {
  return Math.max(1, Math.min(MAX_THREADS, Math.floor(n)));
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
