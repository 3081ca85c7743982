/**
 * A kernel worker thread: serves the kernels of the shared module on the shared memory (../atomics-pool.ts).
 */
import { workerData } from "node:worker_threads";
import { serveKernels } from "../atomics-pool.js";

const { memory, module, tid } = workerData as {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  tid: number;
};
serveKernels(memory, module, tid);
