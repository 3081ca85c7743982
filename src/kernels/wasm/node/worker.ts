/**
 * A kernel worker: instantiates the shared kernel module on the shared memory, then loops: wait for its
 * generation word to change, run the kernel in its argument slot, count itself done.
 */
import { workerData } from "node:worker_threads";
import { CONTROL_OFFSET, Heap, PARALLEL_KERNELS } from "../index.js";
import { ARGS, ERROR, GEN, PENDING, READY, SLOT } from "./control.js";

const { memory, module, tid } = workerData as {
  memory: WebAssembly.Memory;
  module: WebAssembly.Module;
  tid: number;
};
const heap = new Heap(memory, module);
const ctrl = new Int32Array(memory.buffer, CONTROL_OFFSET, ARGS / 4);
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
