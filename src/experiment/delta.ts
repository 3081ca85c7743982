/**
 * How ΔW relates to W0 (Hu et al. 2021, Section 7.3, Table 7): project W0 onto the r-dimensional
 * subspace of ΔW's top-r singular directions, ‖UᵀW0V‖_F (the paper writes UᵀW0Vᵀ with V as rows),
 * and compare with the same projection onto W0's own top-r directions and onto random directions.
 * A small ‖UᵀW0V‖_F next to W0's own means ΔW amplifies directions W0 does not emphasise; the
 * amplification factor is ‖ΔW‖_F / ‖UᵀW0V‖_F.
 *
 * ΔW = s·B·A (B [out, r], A [r, in]) is never formed: with QRs B = Q_B·R_B and Aᵀ = Q_A·R_A,
 * ΔW = s·Q_B·(R_B·R_Aᵀ)·Q_Aᵀ, and the SVD of the small core gives U = Q_B·U_c and V = Q_A·V_c.
 */
import { productSvd, qr, svd } from "../lora/lowrank.js";
import { Rng } from "../tensor/random.js";

export interface DeltaNorms {
  /** How many directions: the adapter's rank (at most min(out, in)). */
  r: number;
  /** min(out, in): with r directions spanning it, all three projections equal ‖W0‖_F. */
  spanDims: number;
  /** ‖W0‖_F. */
  w0NormF: number;
  /** ‖ΔW‖_F = s·‖B·A‖_F. */
  deltaNormF: number;
  /** ‖UᵀW0V‖_F with U, V the top-r left and right singular directions of ΔW. */
  projDelta: number;
  /** The same with W0's own top-r directions (= the root of the sum of its r largest σ²). */
  projW0: number;
  /** The same with random orthonormal directions, averaged over `draws` seeded draws. */
  projRandom: number;
  /** ‖ΔW‖_F / ‖UᵀW0V‖_F. */
  amplification: number;
}

/** ‖UᵀMV‖_F for M [m, n] row-major and the first r columns of U [m, ku] and V [n, kv] (row-major). */
export function projectedNorm(
  M: Float32Array | Float64Array,
  m: number,
  n: number,
  U: Float64Array,
  ku: number,
  V: Float64Array,
  kv: number,
  r: number,
): number {
  // MV [m, r], then (UᵀMV)[a][b] = Σ_i U[i][a]·MV[i][b]
  const mv = new Float64Array(m * r);
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      const w = M[i * n + j]!;
      if (w === 0) continue;
      for (let b = 0; b < r; b++) mv[i * r + b] = mv[i * r + b]! + w * V[j * kv + b]!;
    }
  let sum = 0;
  for (let a = 0; a < r; a++)
    for (let b = 0; b < r; b++) {
      let p = 0;
      for (let i = 0; i < m; i++) p += U[i * ku + a]! * mv[i * r + b]!;
      sum += p * p;
    }
  return Math.sqrt(sum);
}

/** The thin SVD s·B·A = U·diag(S)·Vᵀ from the factors: U [out, k], V [in, k] row-major, S descending. */
export function factoredSvd(
  B: Float32Array | Float64Array,
  A: Float32Array | Float64Array,
  out: number,
  r: number,
  inF: number,
  scale: number,
): { u: Float64Array; s: Float64Array; v: Float64Array; k: number } {
  const c = productSvd(B, A, out, r, inF);
  const s = Float64Array.from(c.s, (x) => x * Math.abs(scale));
  const u = c.u;
  if (scale < 0) for (let i = 0; i < u.length; i++) u[i] = -u[i]!; // the sign goes into U, |s| into S
  return { u, s, v: c.v, k: c.k };
}

/** r orthonormal columns in R^n (row-major [n, r]): the Q of a Gaussian matrix's QR. */
function randomBasis(n: number, r: number, rng: Rng): Float64Array {
  const g = Float64Array.from({ length: n * r }, () => rng.normal());
  return qr(n, r, (i, j) => g[i * r + j]!).q;
}

/**
 * Section 7.3's numbers for one layer: W0 [out, in] row-major, the adapter's B [out, r] and A [r, in],
 * and its scaling s (ΔW = s·B·A). Random directions: `draws` pairs from Rng(`seed`).
 */
export function deltaNorms(
  W0: Float32Array | Float64Array,
  B: Float32Array | Float64Array,
  A: Float32Array | Float64Array,
  out: number,
  r: number,
  inF: number,
  scale: number,
  opts: { draws?: number; seed?: number } = {},
): DeltaNorms {
  if (W0.length !== out * inF || B.length !== out * r || A.length !== r * inF)
    throw new RangeError(
      `deltaNorms: W0 has ${W0.length} values, B ${B.length}, A ${A.length}; expected ${out}×${inF}, ${out}×${r} and ${r}×${inF}`,
    );
  const dirs = Math.min(r, out, inF);
  const d = factoredSvd(B, A, out, r, inF, scale);
  const deltaNormF = Math.sqrt(d.s.reduce((t, x) => t + x * x, 0));
  const projDelta = projectedNorm(W0, out, inF, d.u, d.k, d.v, d.k, dirs);
  const w = svd(out, inF, (i, j) => W0[i * inF + j]!);
  const projW0 = projectedNorm(W0, out, inF, w.u, w.k, w.v, w.k, dirs);
  const w0NormF = Math.sqrt(w.s.reduce((t, x) => t + x * x, 0));
  const draws = opts.draws ?? 10;
  const rng = new Rng(opts.seed ?? 0);
  let projRandom = 0;
  for (let t = 0; t < draws; t++)
    projRandom +=
      projectedNorm(
        W0,
        out,
        inF,
        randomBasis(out, dirs, rng),
        dirs,
        randomBasis(inF, dirs, rng),
        dirs,
        dirs,
      ) / draws;
  return {
    r: dirs,
    spanDims: Math.min(out, inF),
    w0NormF,
    deltaNormF,
    projDelta,
    projW0,
    projRandom,
    amplification: deltaNormF / projDelta,
  };
}
