/** The wasm backend: the shared conformance tests against ref, and its own entry points. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { precompileKernels, wasmAvailable, wasmBackend } from "../../src/kernels/wasm/index.js";
import { conformance } from "./conformance.js";

const skip = !wasmAvailable() && "WebAssembly SIMD unavailable";
conformance("wasm", () => wasmBackend, skip);

describe("wasm entry points", { skip }, () => {
  it("precompileKernels resolves, and the backend then uses that module", async () => {
    await precompileKernels();
    const out = new Float32Array(3);
    wasmBackend.scale(out, Float32Array.from([1, 2, 3]), 2);
    assert.deepEqual([...out], [2, 4, 6]);
  });
});
