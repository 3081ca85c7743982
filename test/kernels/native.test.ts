/** The native backend: the shared conformance tests against ref (skipped, saying why, when the addon is absent). */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import type { Backend } from "../../src/kernels/backend.js";
import { nativeAddon, nativeStatus } from "../../src/kernels/native/node/addon.js";
import { createNativeBackend } from "../../src/kernels/native/node/backend.js";
import { conformance } from "./conformance.js";

const addon = nativeAddon();
let native: Backend | undefined;
const get = () => {
  native ??= createNativeBackend(addon!);
  return native;
};
const skip = !addon && `native addon unavailable: ${nativeStatus()}`;

for (const threads of [1, 2]) {
  describe(`native, ${threads} thread(s)`, { skip }, () => {
    it("sets its thread count", () => {
      addon!.setThreads(threads);
      assert.equal(addon!.info().threads, threads);
    });
    conformance(`native (${threads} threads)`, get, skip);
  });
}

describe("native: the ISA level", { skip }, () => {
  const forced = process.env.LORA_ISA;
  it(`runs at the level LORA_ISA forces (${forced || "unset: the CPU's best"})`, () => {
    const info = addon!.info();
    assert.equal(info.error, "");
    assert.equal(info.isa, forced || info.cpu);
    assert.equal(info.forced, Boolean(forced));
    assert.ok(info.supported.includes(info.isa));
  });
});

describe("native: results do not depend on the thread count", { skip }, () => {
  it("GEMM (split by columns, by rows, by batch), layer-norm weight gradients and a bias gradient are bit-identical", () => {
    const rand = (n: number) => Float32Array.from({ length: n }, (_, i) => Math.sin(i * 12.9898) * 0.5);
    const runAll = () => {
      const k = get();
      const outs: Float32Array[] = [];
      for (const [M, K, N, batch] of [
        [256, 300, 520, 1],
        [700, 96, 40, 1],
        [64, 64, 64, 24],
        [610, 300, 8, 1], // the 12 x 8 tiles, split by rows
        [8, 600, 300, 1], // few rows: B in place, split by columns
        [20, 300, 16, 1], // split by rows into 12 + 8: the 6-row and the 4-row tiles
        [130, 1100, 70, 1], // several depth blocks
      ] as const) {
        const out = new Float32Array(batch * M * N);
        const d = {
          batch,
          M,
          N,
          K,
          transA: false,
          transB: true,
          strideA: M * K,
          strideB: 0,
          strideOut: M * N,
          accumulate: false,
        };
        k.matmul(out, rand(batch * M * K), rand(N * K), d);
        outs.push(out);
      }
      const [N, C] = [300, 96];
      const x = rand(N * C);
      const w = rand(C).map((v) => v + 1);
      const mean = new Float32Array(N);
      const rstd = new Float32Array(N);
      k.layerNormForward(new Float32Array(N * C), mean, rstd, x, w, rand(C), N, C, 1e-5);
      const dw = new Float32Array(C);
      const db = new Float32Array(C);
      k.layerNormBackward(new Float32Array(N * C), dw, db, rand(N * C), x, w, mean, rstd, N, C);
      const bias = new Float32Array(C);
      k.sumTo(bias, rand(N * C), [N, C], [0, 1]);
      return [...outs, dw, db, bias];
    };
    addon!.setThreads(1);
    const one = runAll();
    addon!.setThreads(2);
    const two = runAll();
    one.forEach((a, i) => assert.deepEqual(two[i], a, `buffer ${i}`));
  });
});
