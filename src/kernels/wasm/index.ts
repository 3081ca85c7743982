/**
 * The browser-safe wasm backend: single-threaded, its own private memory, the module compiled
 * synchronously from the embedded bytes on first use (relaxed SIMD if this engine validates it).
 * Node code gets the threaded variant by importing src/kernels/wasm/node/pool.ts (src/node.ts and the
 * CLI do), which registers itself under the same name "wasm".
 *
 * Browsers: the bytes are embedded, so no fs or fetch is needed. Synchronous compilation of a ~20 KB
 * module is fine in a Web Worker, but Chrome refuses it on the main thread (limit 4 KB): there, call
 * `await precompileKernels()` first. A cross-origin isolated page's Web Worker gets the threaded
 * variant from `createWebThreadedWasm` (web-pool.ts), a pool of Web Workers over one shared memory.
 */
import type { Backend } from "../backend.js";
import { createWasmBackend, type WasmRuntime } from "./backend.js";
import { Heap } from "./heap.js";
import { compileKernels, INITIAL_PAGES, MAX_PAGES, simdSupported } from "./module.js";
import { singleThread } from "./threads.js";

export { serveKernels } from "./atomics-pool.js";
export { createWasmBackend, type WasmRuntime } from "./backend.js";
export { CONTROL_OFFSET, Heap } from "./heap.js";
export {
  compileKernels,
  INITIAL_PAGES,
  MAX_PAGES,
  precompileKernels,
  relaxedSupported,
  simdSupported,
} from "./module.js";
export { PARALLEL_KERNELS, type ParallelKernel, ranges, singleThread, type Threads } from "./threads.js";

let runtime: WasmRuntime | null = null;

/** The single-thread runtime, created on first use (so a Node entry can enable relaxed SIMD first). */
function singleRuntime(): WasmRuntime {
  if (!runtime) {
    const { module } = compileKernels({ shared: false });
    const memory = new WebAssembly.Memory({ initial: INITIAL_PAGES, maximum: MAX_PAGES });
    runtime = { heap: new Heap(memory, module), threads: singleThread };
  }
  return runtime;
}

export { createWebThreadedWasm, type KernelWorker, WebWorkerPool } from "./web-pool.js";

export const wasmBackend: Backend = createWasmBackend("wasm", singleRuntime);
export { simdSupported as wasmAvailable };
