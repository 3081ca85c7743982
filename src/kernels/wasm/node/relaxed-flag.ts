/**
 * Turns on relaxed SIMD in Node 20 (Node 22+ has it by default). V8 flags are process-wide, so the
 * worker threads see it too (it cannot go in a Worker's execArgv: Node rejects that flag there). This
 * must run before the first wasm compile; the kernel modules compile lazily, on first use, so importing
 * the node pool anywhere before the first kernel call is enough. If the flag does not take, the plain
 * mul+add build is used: compileKernels checks WebAssembly.validate on the relaxed build.
 */
import { setFlagsFromString } from "node:v8";
import { relaxedSupported } from "../module.js";

if (!relaxedSupported()) {
  try {
    setFlagsFromString("--experimental-wasm-relaxed-simd");
  } catch {
    // unknown flag on this Node: stay on the plain build
  }
}
