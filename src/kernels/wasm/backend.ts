/**
 * The WebAssembly SIMD128 backend: every Backend method as a wasm kernel (assembly/*.ts), except the
 * pure memory moves (slice, sliceBackward, embeddingForward/Backward), which stay TypedArray copies and
 * loops: routing them through wasm would copy more than they touch.
 *
 * Each call copies its operands into the arena, runs the kernel (split between threads where the work
 * is large enough) and copies its outputs back, so aliasing (out === a) is safe.
 */
import type { Backend } from "../backend.js";
import { embeddingBackward, embeddingForward, slice, sliceBackward } from "../ref/elementwise.js";
import { attentionBackward, attentionForward, rope } from "./attention.js";
import {
  binary,
  geluBackward,
  geluForward,
  scale,
  siluBackward,
  siluForward,
  softcapBackward,
  softcapForward,
  sumTo,
} from "./elementwise.js";
import { crossEntropyBackward, crossEntropyForward } from "./loss.js";
import { matmul } from "./matmul.js";
import {
  layerNormBackward,
  layerNormForward,
  rmsNormBackward,
  rmsNormForward,
  softmaxBackward,
  softmaxForward,
} from "./norms.js";
import { adamw } from "./optim.js";
import type { WasmRuntime } from "./runtime.js";

export type { WasmRuntime } from "./runtime.js";

/** A wasm backend named `name`; `runtime` is called on every kernel call (create the runtime lazily in it). */
export function createWasmBackend(name: string, runtime: () => WasmRuntime): Backend {
  const rt = runtime;
  return {
    name,
    matmul: (...a) => matmul(rt(), ...a),
    binary: (...a) => binary(rt(), ...a),
    sumTo: (...a) => sumTo(rt(), ...a),
    scale: (...a) => scale(rt(), ...a),
    slice,
    sliceBackward,
    embeddingForward,
    embeddingBackward,
    layerNormForward: (...a) => layerNormForward(rt(), ...a),
    layerNormBackward: (...a) => layerNormBackward(rt(), ...a),
    rmsNormForward: (...a) => rmsNormForward(rt(), ...a),
    rmsNormBackward: (...a) => rmsNormBackward(rt(), ...a),
    geluForward: (...a) => geluForward(rt(), ...a),
    geluBackward: (...a) => geluBackward(rt(), ...a),
    siluForward: (...a) => siluForward(rt(), ...a),
    siluBackward: (...a) => siluBackward(rt(), ...a),
    softcapForward: (...a) => softcapForward(rt(), ...a),
    softcapBackward: (...a) => softcapBackward(rt(), ...a),
    softmaxForward: (...a) => softmaxForward(rt(), ...a),
    softmaxBackward: (...a) => softmaxBackward(rt(), ...a),
    rope: (...a) => rope(rt(), ...a),
    attentionForward: (...a) => attentionForward(rt(), ...a),
    attentionBackward: (...a) => attentionBackward(rt(), ...a),
    crossEntropyForward: (...a) => crossEntropyForward(rt(), ...a),
    crossEntropyBackward: (...a) => crossEntropyBackward(rt(), ...a),
    adamw: (...a) => adamw(rt(), ...a),
  };
}
