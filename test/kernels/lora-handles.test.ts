/**
 * The native backend keeps each adapter's weights as a kernel handle, by the A array: the handle must
 * go when the adapter does (a served adapter unloaded), not keep its arrays forever. 20 adapters run
 * once and are dropped; after garbage collection their A arrays are collected.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { availableBackends, setBackend } from "../../src/kernels/index.js";
import "../../src/kernels/node/index.js";

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

describe("native LoRA weights handles", {
  skip: !availableBackends().includes("native") && "the native addon is not built",
}, () => {
  it("are collected with their adapter's arrays", async () => {
    const k = setBackend("native");
    const [N, inF, outF, r] = [4, 64, 64, 8];
    const x = new Float32Array(N * inF).fill(0.5);
    const y = new Float32Array(N * outF);
    let collected = 0;
    const registry = new FinalizationRegistry(() => collected++);
    const ADAPTERS = 20;
    for (let i = 0; i < ADAPTERS; i++) {
      const A = new Float32Array(r * inF).fill(0.01);
      const B = new Float32Array(outF * r).fill(0.01);
      k.loraRowsForward!(y, x, inF, outF, [{ rows: Int32Array.from([0, 2]), A, B, r, scaling: 2 }], 64);
      registry.register(A, i);
    }
    for (let round = 0; round < 20 && collected < ADAPTERS; round++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(collected >= ADAPTERS - 1, `${collected} of ${ADAPTERS} adapters' A arrays were collected`);
  });
});
