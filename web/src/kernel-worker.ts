/**
 * A wasm kernel worker of the threaded backend (src/kernels/wasm/web-pool.ts): the training worker
 * starts one per extra thread and posts it the shared memory, the compiled kernel module and its thread
 * index; from then on it only serves kernel parts, blocking in Atomics.wait between them.
 */
import { serveKernels } from "../../src/kernels/wasm/index.js";

self.onmessage = (
  ev: MessageEvent<{ memory: WebAssembly.Memory; module: WebAssembly.Module; tid: number }>,
) => {
  const { memory, module, tid } = ev.data;
  serveKernels(memory, module, tid);
};
