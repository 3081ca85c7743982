/**
 * The native backend keeps each adapter's weights as a kernel handle, by the A array: the handle must
 * go when the adapter does (a served adapter unloaded), not keep its arrays forever. 20 adapters run
 * once and are dropped; after garbage collection their A arrays are collected, and the handles' ids
 * (the numbers loraRows and linearRows take) are reused, so the addon's table does not grow. An id that
 * names no live handle, counts past the rows and rows outside the batch are refused.
 */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import { availableBackends, setBackend } from "../../src/kernels/index.js";
import { nativeAddon } from "../../src/kernels/native/node/addon.js";
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
      k.loraRowsForward!(y, x, inF, outF, [{ A, B, r, scaling: 2 }], [Int32Array.from([0, 2])], 64);
      registry.register(A, i);
    }
    for (let round = 0; round < 20 && collected < ADAPTERS; round++) {
      gc();
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.ok(collected >= ADAPTERS - 1, `${collected} of ${ADAPTERS} adapters' A arrays were collected`);
    // the slots of the collected handles are taken again
    // biome-ignore lint/suspicious/noExplicitAny: the addon's functions are untyped N-API exports
    const n = nativeAddon() as any;
    const ids = Array.from({ length: ADAPTERS }, () => {
      const A = new Float32Array(r * inF);
      const B = new Float32Array(outF * r);
      return (n.loraWeights({ A, B, panels: null }, r, 1, inF, outF) as { id: number }).id;
    });
    assert.ok(Math.max(...ids) < 2 * ADAPTERS + 1, `ids ${ids.join(", ")}: the freed slots were not reused`);
  });

  it("refuses an id of no live handle, counts past the rows and rows outside the batch", () => {
    setBackend("native");
    // biome-ignore lint/suspicious/noExplicitAny: the addon's functions are untyped N-API exports
    const n = nativeAddon() as any;
    const [N, inF, outF, r] = [3, 16, 8, 2];
    const A = new Float32Array(r * inF).fill(0.1);
    const B = new Float32Array(outF * r).fill(0.1);
    const h = n.loraWeights({ A, B, panels: null }, r, 1, inF, outF) as { id: number };
    const x = new Float32Array(N * inF);
    const y = new Float32Array(N * outF);
    // [ids], [counts][rows]
    const call = (id: number[], ...idx: number[]) =>
      n.loraRows(y, x, inF, outF, Int32Array.from(id), Int32Array.from(idx), 1, 64);
    call([h.id], 2, 0, 2);
    assert.throws(() => call([1_000_000], 1, 0), /not a live loraWeights handle/);
    assert.throws(() => call([-1], 1, 0), /not a live loraWeights handle/);
    assert.throws(() => call([h.id], 3, 0, 1), /the counts exceed the rows/);
    assert.throws(() => call([h.id], 1, N), /a row is outside the batch/);
    assert.throws(() => call([h.id]), /fewer than G counts/);
    assert.throws(() => call([], 1, 0), /fewer than G ids/);
    assert.throws(
      () =>
        n.loraRows(
          new Float32Array(N * 9),
          x,
          inF,
          9,
          Int32Array.from([h.id]),
          Int32Array.from([1, 0]),
          1,
          64,
        ),
      /other layer sizes/,
    );
  });
});
