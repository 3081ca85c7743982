/**
 * ‖ΔW‖_F and the singular values of ΔW = s·B·A through the r×r core (src/lora/lowrank.ts): against
 * hand-computed matrices, against ΔW formed explicitly, and against numpy's SVD of the fixture adapters
 * (scripts/make_mlx_fixtures.py).
 */
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, it } from "node:test";
import { readAdapter } from "../../src/io/node/adapter-folder.js";
import { adapterModules } from "../../src/io/peft.js";
import { deltaStats, qrR, singularValues } from "../../src/lora/lowrank.js";
import { adapterReport } from "../../src/lora/report.js";
import { Rng } from "../../src/tensor/random.js";
import { assertClose, fixturesDir } from "../helpers.js";

const close = (got: number, want: number, rel = 1e-12) =>
  assert.ok(Math.abs(got - want) <= rel * Math.max(1, Math.abs(want)), `${got} != ${want}`);

describe("lowrank", () => {
  it("singular values of hand-computed matrices", () => {
    // [[3, 0], [4, 5]]: MᵀM = [[25, 20], [20, 25]], eigenvalues 45 and 5
    const s = singularValues(Float64Array.from([3, 0, 4, 5]), 2);
    close(s[0]!, Math.sqrt(45));
    close(s[1]!, Math.sqrt(5));
    // a diagonal matrix with a negative entry and a zero: |d| sorted
    const d = singularValues(Float64Array.from([0, 0, 0, 0, -7, 0, 0, 0, 2]), 3);
    assert.deepEqual([...d], [7, 2, 0]);
  });

  it("QR's R reproduces MᵀM = RᵀR and is upper triangular", () => {
    const rng = new Rng(3);
    const m = 7;
    const n = 3;
    const M = Array.from({ length: m * n }, () => rng.normal());
    const R = qrR(m, n, (i, j) => M[i * n + j]!);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) assert.equal(R[i * n + j], 0);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < n; j++) {
        let mtm = 0;
        for (let k = 0; k < m; k++) mtm += M[k * n + i]! * M[k * n + j]!;
        let rtr = 0;
        for (let k = 0; k < n; k++) rtr += R[k * n + i]! * R[k * n + j]!;
        close(rtr, mtm, 1e-12);
      }
  });

  it("deltaStats equals ΔW formed explicitly; a rank-deficient product and B = 0 have the right rank", () => {
    const rng = new Rng(5);
    const [out, r, inF, s] = [9, 3, 6, 1.7];
    const A = Float32Array.from({ length: r * inF }, () => rng.normal());
    const B = Float32Array.from({ length: out * r }, () => rng.normal());
    let sum = 0;
    for (let o = 0; o < out; o++)
      for (let i = 0; i < inF; i++) {
        let d = 0;
        for (let k = 0; k < r; k++) d += B[o * r + k]! * A[k * inF + i]!;
        sum += (s * d) ** 2;
      }
    const st = deltaStats(B, A, out, r, inF, s);
    close(st.normF, Math.sqrt(sum), 1e-10);
    close(Math.hypot(...st.singular), Math.sqrt(sum), 1e-10); // ‖ΔW‖_F² = Σσ²
    assert.equal(st.effectiveRank, 3);
    // B's columns all equal: B·A = b·(a1 + a2 + a3)ᵀ has rank 1
    const B1 = Float32Array.from({ length: out * r }, (_, i) => B[Math.floor(i / r) * r]!);
    const one = deltaStats(B1, A, out, r, inF, s);
    assert.equal(one.effectiveRank, 1);
    assert.ok(one.singular[1]! < 1e-6 * one.singular[0]!);
    const zero = deltaStats(new Float32Array(out * r), A, out, r, inF, s);
    assert.deepEqual([zero.normF, zero.effectiveRank, ...zero.singular], [0, 0, 0, 0, 0]);
  });

  it("‖ΔW‖_F and singular values of the fixture adapters match numpy's SVD", () => {
    const cases: Array<[string, string]> = [
      ["models/llama_untied/adapter", "mlx/peft_llama_untied_deltas.json"],
      ["mlx/llama_untied", "mlx/llama_untied/expected.json"],
      ["mlx/gpt2", "mlx/gpt2/expected.json"],
    ];
    for (const [adapter, ref] of cases) {
      const json = JSON.parse(readFileSync(join(fixturesDir, ref), "utf8"));
      const want = (json.deltas ?? json) as Record<string, { norm: number; singular: number[] }>;
      const read = readAdapter(join(fixturesDir, adapter));
      const report = adapterReport(adapterModules(read.config, read.tensors, read.weights));
      assert.deepEqual(report.modules.map((m) => m.path).sort(), Object.keys(want).sort());
      for (const m of report.modules) {
        assertClose([m.normF], [want[m.path]!.norm], "f32", `${adapter} ${m.path} ‖ΔW‖_F`);
        assertClose(m.singular, want[m.path]!.singular, "f32", `${adapter} ${m.path} σ`);
        assert.equal(m.effectiveRank, m.r);
      }
    }
  });
});
