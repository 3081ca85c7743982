/** Section 7.3's numbers (experiment/delta.ts) on matrices built with known singular vectors and values. */
import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { deltaNorms, factoredSvd } from "../../src/experiment/delta.js";
import { Rng } from "../../src/tensor/random.js";

/** The n×n Householder reflection I - 2vvᵀ/(vᵀv): orthogonal, its columns known in closed form. */
function reflection(v: number[]): number[][] {
  const vv = v.reduce((s, x) => s + x * x, 0);
  return v.map((vi, i) => v.map((vj, j) => (i === j ? 1 : 0) - (2 * vi * vj) / vv));
}
const col = (m: number[][], j: number) => m.map((row) => row[j]!);

describe("deltaNorms (Section 7.3, Table 7)", () => {
  // W0 = Σ σ_i p_i q_iᵀ, 6×5, with P, Q orthogonal and σ = 10, 6, 3, 1, 0.5
  const P = reflection([1, -2, 0.5, 3, 1, -1]);
  const Q = reflection([2, 1, -1, 0.5, 1]);
  const sigma = [10, 6, 3, 1, 0.5];
  const out = 6;
  const inF = 5;
  const W0 = new Float64Array(out * inF);
  for (let i = 0; i < out; i++)
    for (let j = 0; j < inF; j++)
      W0[i * inF + j] = sigma.reduce((s, sg, t) => s + sg * P[i]![t]! * Q[j]![t]!, 0);

  it("projects W0 onto ΔW's directions, W0's own and random ones, exactly on a constructed ΔW", () => {
    // ΔW = s·(2·p3·q3ᵀ + p4·q4ᵀ), written as B·A through an invertible 2×2 mix G: B = [2p3, p4]·G, A = G⁻¹·[q3ᵀ; q4ᵀ]
    const G = [
      [1, 2],
      [-1, 1],
    ];
    const det = G[0]![0]! * G[1]![1]! - G[0]![1]! * G[1]![0]!;
    const Gi = [
      [G[1]![1]! / det, -G[0]![1]! / det],
      [-G[1]![0]! / det, G[0]![0]! / det],
    ];
    const bCols = [col(P, 3).map((x) => 2 * x), col(P, 4)];
    const aRows = [col(Q, 3), col(Q, 4)];
    const B = new Float64Array(out * 2);
    for (let i = 0; i < out; i++)
      for (let c = 0; c < 2; c++) B[i * 2 + c] = bCols[0]![i]! * G[0]![c]! + bCols[1]![i]! * G[1]![c]!;
    const A = new Float64Array(2 * inF);
    for (let rr = 0; rr < 2; rr++)
      for (let j = 0; j < inF; j++)
        A[rr * inF + j] = Gi[rr]![0]! * aRows[0]![j]! + Gi[rr]![1]! * aRows[1]![j]!;
    const scale = 1.5;
    const d = deltaNorms(W0, B, A, out, 2, inF, scale, { draws: 20, seed: 7 });
    const close = (x: number, y: number, what: string) =>
      assert.ok(Math.abs(x - y) < 1e-9, `${what}: ${x} vs ${y}`);
    close(d.deltaNormF, scale * Math.sqrt(4 + 1), "‖ΔW‖_F");
    close(d.projDelta, Math.sqrt(1 + 0.25), "‖UᵀW0V‖_F, ΔW's directions (σ = 1 and 0.5)");
    close(d.projW0, Math.sqrt(100 + 36), "W0's top-2 directions (σ = 10 and 6)");
    close(d.w0NormF, Math.sqrt(sigma.reduce((s, x) => s + x * x, 0)), "‖W0‖_F");
    close(d.amplification, (scale * Math.sqrt(5)) / Math.sqrt(1.25), "amplification");
    assert.equal(d.r, 2);
    // random directions lie between the weakest and the strongest 2-dimensional projections
    assert.ok(d.projRandom > 0 && d.projRandom < d.projW0, `${d.projRandom}`);
    assert.equal(deltaNorms(W0, B, A, out, 2, inF, scale, { draws: 20, seed: 7 }).projRandom, d.projRandom);
    assert.notEqual(
      deltaNorms(W0, B, A, out, 2, inF, scale, { draws: 20, seed: 8 }).projRandom,
      d.projRandom,
    );
  });

  it("gives ‖W0‖_F for every choice of directions once they span the whole space", () => {
    const rng = new Rng(4);
    const n = 5;
    const W = Float64Array.from({ length: n * n }, () => rng.normal());
    const B = Float64Array.from({ length: n * n }, () => rng.normal());
    const A = Float64Array.from({ length: n * n }, () => rng.normal());
    const d = deltaNorms(W, B, A, n, n, n, 0.5, { draws: 3 });
    const norm = Math.sqrt(W.reduce((s, x) => s + x * x, 0));
    for (const [what, x] of Object.entries({ delta: d.projDelta, w0: d.projW0, random: d.projRandom }))
      assert.ok(Math.abs(x - norm) < 1e-9, `${what}: ${x} vs ${norm}`);
  });

  it("factors s·B·A into U·S·Vᵀ without forming it: the product rebuilds, U and V orthonormal", () => {
    const rng = new Rng(9);
    const [out, r, inF, s] = [7, 3, 4, -2];
    const B = Float32Array.from({ length: out * r }, () => rng.normal());
    const A = Float32Array.from({ length: r * inF }, () => rng.normal());
    const f = factoredSvd(B, A, out, r, inF, s);
    for (let i = 0; i < out; i++)
      for (let j = 0; j < inF; j++) {
        let dense = 0;
        for (let t = 0; t < r; t++) dense += s * B[i * r + t]! * A[t * inF + j]!;
        let rebuilt = 0;
        for (let d = 0; d < f.k; d++) rebuilt += f.u[i * f.k + d]! * f.s[d]! * f.v[j * f.k + d]!;
        assert.ok(Math.abs(dense - rebuilt) < 1e-5, `(${i}, ${j}): ${dense} vs ${rebuilt}`);
      }
    for (const [m, rows] of [
      [f.u, out],
      [f.v, inF],
    ] as const)
      for (let a = 0; a < f.k; a++)
        for (let b = 0; b < f.k; b++) {
          let dot = 0;
          for (let i = 0; i < rows; i++) dot += m[i * f.k + a]! * m[i * f.k + b]!;
          assert.ok(Math.abs(dot - (a === b ? 1 : 0)) < 1e-9);
        }
  });
});
