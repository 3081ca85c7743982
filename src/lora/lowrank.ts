/**
 * The size and spectrum of a LoRA update ΔW = s·B·A (B [out, r], A [r, in]) without forming ΔW:
 *   ‖B·A‖_F² = tr((BᵀB)(AAᵀ)), two r×r Gram matrices;
 *   singular values of B·A = those of the r×r core R_B·R_Aᵀ, where B = Q_B·R_B and Aᵀ = Q_A·R_A are
 *   Householder QR factorisations (B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ with orthonormal Q_B, Q_A), taken by a
 *   one-sided Jacobi SVD. Cost O((out + in)·r²), all in f64.
 * Also the full thin SVD and QR of a weight, and torch.svd_lowrank's randomized SVD, which PiSSA and
 * OLoRA initialise from (init.ts), and the best rank-k approximation of a sum of LoRA updates
 * (combine.ts).
 */

/**
 * Householder reflections applied in place to the column-major m×n matrix `a`, k = min(m, n) of them,
 * as LAPACK's geqrf makes them (dlarfg): column j's reflection maps a[j..m-1, j] to [beta, 0, ...] with
 * beta = -sign(a_jj)·‖a[j..m-1, j]‖, and is skipped (the identity) where a[j+1..m-1, j] is already 0.
 * Afterwards a's upper triangle holds R. Returns each reflection's vector v (zero above j) and 2/(vᵀv),
 * 0 for a skipped one.
 */
function householder(a: Float64Array, m: number, n: number): { v: Float64Array[]; f: number[] } {
  const k = Math.min(m, n);
  const vs: Float64Array[] = [];
  const fs: number[] = [];
  for (let j = 0; j < k; j++) {
    const cj = j * m;
    let below = 0;
    for (let i = j + 1; i < m; i++) below += a[cj + i]! * a[cj + i]!;
    const v = new Float64Array(m);
    vs.push(v);
    if (below === 0) {
      fs.push(0); // nothing to annihilate: LAPACK's tau = 0, R keeps a_jj's sign
      continue;
    }
    const x0 = a[cj + j]!;
    const norm = Math.sqrt(x0 * x0 + below);
    const beta = x0 >= 0 ? -norm : norm; // the sign that avoids cancellation in x0 - beta
    v[j] = x0 - beta;
    for (let i = j + 1; i < m; i++) v[i] = a[cj + i]!;
    const f = 2 / (v[j]! * v[j]! + below);
    fs.push(f);
    // H = I - f·v·vᵀ applied to the columns j..n-1 (column j becomes [beta, 0, ...])
    for (let c = j; c < n; c++) {
      const cc = c * m;
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i]! * a[cc + i]!;
      const g = f * dot;
      for (let i = j; i < m; i++) a[cc + i] = a[cc + i]! - g * v[i]!;
    }
  }
  return { v: vs, f: fs };
}

const columnMajor = (m: number, n: number, at: (i: number, j: number) => number) => {
  const a = new Float64Array(m * n);
  for (let j = 0; j < n; j++) for (let i = 0; i < m; i++) a[j * m + i] = at(i, j);
  return a;
};

/** The r×r upper-triangular R of a Householder QR of the m×n matrix M (m >= n), M[i][j] = at(i, j). */
export function qrR(m: number, n: number, at: (i: number, j: number) => number): Float64Array {
  if (m < n) throw new RangeError(`qrR needs at least as many rows as columns, got ${m}×${n}`);
  const a = columnMajor(m, n, at);
  householder(a, m, n);
  const r = new Float64Array(n * n); // row-major, upper triangular
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) r[i * n + j] = a[j * m + i]!;
  return r;
}

/**
 * The reduced QR of the m×n matrix M, M = Q·R with Q [m, k] orthonormal columns and R [k, n] upper
 * trapezoidal, k = min(m, n), both row-major, as torch.linalg.qr (LAPACK geqrf + orgqr) gives them, signs
 * included: R's diagonal is -sign(M's pivot) wherever a reflection ran.
 */
export function qr(
  m: number,
  n: number,
  at: (i: number, j: number) => number,
): { q: Float64Array; r: Float64Array; k: number } {
  const k = Math.min(m, n);
  const a = columnMajor(m, n, at);
  const { v: vs, f: fs } = householder(a, m, n);
  const r = new Float64Array(k * n);
  for (let i = 0; i < k; i++) for (let j = i; j < n; j++) r[i * n + j] = a[j * m + i]!;
  // Q = H_0·H_1·…·H_{k-1}·I[:, :k]: the reflections applied to the identity's columns, last first
  const q = new Float64Array(m * k); // column-major while it is built
  for (let c = 0; c < k; c++) q[c * m + c] = 1;
  for (let j = k - 1; j >= 0; j--) {
    const v = vs[j]!;
    const f = fs[j]!;
    if (f === 0) continue;
    for (let c = 0; c < k; c++) {
      const cc = c * m;
      let dot = 0;
      for (let i = j; i < m; i++) dot += v[i]! * q[cc + i]!;
      const g = f * dot;
      for (let i = j; i < m; i++) q[cc + i] = q[cc + i]! - g * v[i]!;
    }
  }
  const qRow = new Float64Array(m * k);
  for (let i = 0; i < m; i++) for (let c = 0; c < k; c++) qRow[i * k + c] = q[c * m + i]!;
  return { q: qRow, r, k };
}

/** The plane rotation of the columns at offsets p and q (n entries each): [x, y] -> [c·x - s·y, s·x + c·y]. */
function rotate(m: Float64Array, p: number, q: number, n: number, cs: number, sn: number): void {
  for (let i = 0; i < n; i++) {
    const x = m[p + i]!;
    const y = m[q + i]!;
    m[p + i] = cs * x - sn * y;
    m[q + i] = sn * x + cs * y;
  }
}

/**
 * One-sided Jacobi (Hestenes) on the columns of the column-major rows×cols matrix `a` (rows >= cols), in
 * place: rotate pairs of columns until every pair is orthogonal to rounding. Afterwards the column norms
 * are the singular values and, when `v` (cols×cols, column-major, starting as the identity) is given, it
 * holds the rotations: a_in·V = a_out. Converges quadratically.
 */
function jacobi(a: Float64Array, rows: number, cols: number, v: Float64Array | null): void {
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < cols - 1; p++) {
      const cp = p * rows;
      for (let q = p + 1; q < cols; q++) {
        const cq = q * rows;
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < rows; i++) {
          const x = a[cp + i]!;
          const y = a[cq + i]!;
          alpha += x * x;
          beta += y * y;
          gamma += x * y;
        }
        if (gamma === 0 || Math.abs(gamma) <= 1e-15 * Math.sqrt(alpha * beta)) continue;
        rotated = true;
        const zeta = (beta - alpha) / (2 * gamma);
        const t = (zeta >= 0 ? 1 : -1) / (Math.abs(zeta) + Math.sqrt(1 + zeta * zeta));
        const cs = 1 / Math.sqrt(1 + t * t);
        const sn = cs * t;
        rotate(a, cp, cq, rows, cs, sn);
        if (v) rotate(v, p * cols, q * cols, cols, cs, sn);
      }
    }
    if (!rotated) break;
  }
}

/**
 * The singular values (descending) of a square n×n row-major matrix, by one-sided Jacobi; accurate to a
 * few ulps of σ_max for small n.
 */
export function singularValues(c: Float64Array, n: number): Float64Array {
  const a = columnMajor(n, n, (i, j) => c[i * n + j]!);
  jacobi(a, n, n, null);
  const s = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += a[j * n + i]! ** 2;
    s[j] = Math.sqrt(sum);
  }
  return s.sort().reverse();
}

/** A thin SVD M = U·diag(S)·Vᵀ: U [m, k], V [n, k] row-major with orthonormal columns, S descending. */
export interface Svd {
  u: Float64Array;
  s: Float64Array;
  v: Float64Array;
  k: number;
}

/**
 * The thin SVD of the m×n matrix M (M[i][j] = at(i, j)), k = min(m, n), by one-sided Jacobi on the
 * columns of M or of Mᵀ, whichever has fewer: O(k²·max(m, n)) per sweep, all in f64. A column for a
 * zero singular value is left zero. Signs of each pair (u_i, v_i) are those Jacobi lands on; another SVD
 * (LAPACK's) may flip a pair.
 */
export function svd(m: number, n: number, at: (i: number, j: number) => number): Svd {
  if (m < n) {
    const t = svd(n, m, (i, j) => at(j, i));
    return { u: t.v, s: t.s, v: t.u, k: t.k };
  }
  const k = n;
  const a = columnMajor(m, n, at);
  const vc = new Float64Array(n * n);
  for (let j = 0; j < n; j++) vc[j * n + j] = 1;
  jacobi(a, m, n, vc);
  const norms = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let sum = 0;
    for (let i = 0; i < m; i++) sum += a[j * m + i]! ** 2;
    norms[j] = Math.sqrt(sum);
  }
  const order = [...norms.keys()].sort((x, y) => norms[y]! - norms[x]!);
  const u = new Float64Array(m * k);
  const v = new Float64Array(n * k);
  const s = new Float64Array(k);
  order.forEach((j, c) => {
    const sj = norms[j]!;
    s[c] = sj;
    if (sj > 0) for (let i = 0; i < m; i++) u[i * k + c] = a[j * m + i]! / sj;
    for (let i = 0; i < n; i++) v[i * k + c] = vc[j * n + i]!;
  });
  return { u, s, v, k };
}

/**
 * The thin SVD of the product L·M (L [out, n], M [n, in], row-major) without forming it: with QRs
 * L = Q_L·R_L and Mᵀ = Q_M·R_M, L·M = Q_L·(R_L·R_Mᵀ)·Q_Mᵀ, and the SVD of that small core gives
 * U = Q_L·U_c and V = Q_M·V_c. U [out, k], V [in, k] row-major, S descending.
 */
export function productSvd(
  L: ArrayLike<number>,
  M: ArrayLike<number>,
  out: number,
  n: number,
  inF: number,
): Svd {
  const ql = qr(out, n, (i, j) => L[i * n + j]!); // Q_L [out, kl], R_L [kl, n]
  const qm = qr(inF, n, (i, j) => M[j * inF + i]!); // Mᵀ [in, n]: Q_M [in, km], R_M [km, n]
  const core = new Float64Array(ql.k * qm.k); // R_L·R_Mᵀ [kl, km]
  for (let i = 0; i < ql.k; i++)
    for (let j = 0; j < qm.k; j++) {
      let sum = 0;
      for (let t = 0; t < n; t++) sum += ql.r[i * n + t]! * qm.r[j * n + t]!;
      core[i * qm.k + j] = sum;
    }
  const c = svd(ql.k, qm.k, (i, j) => core[i * qm.k + j]!);
  const k = c.k;
  // q [rows, kq] · small [kq, k]
  const times = (q: Float64Array, rows: number, kq: number, small: Float64Array) => {
    const o = new Float64Array(rows * k);
    for (let i = 0; i < rows; i++)
      for (let t = 0; t < kq; t++) {
        const w = q[i * kq + t]!;
        for (let d = 0; d < k; d++) o[i * k + d] = o[i * k + d]! + w * small[t * k + d]!;
      }
    return o;
  };
  return { u: times(ql.q, out, ql.k, c.u), s: c.s, v: times(qm.q, inF, qm.k, c.v), k };
}

/**
 * torch.svd_lowrank(M, q, niter) (Halko, Martinsson and Tropp 2009, algorithms 4.4 and 5.1), the
 * algorithm with torch's steps: on the tall one of M and Mᵀ, a random basis X = M·G (G [n, q] drawn
 * from `normal`), Q = qr(X).Q, then `niter` subspace iterations Q = qr(Mᵀ·Q).Q, Q = qr(M·Q).Q, and the
 * exact SVD of the small q×n matrix Qᵀ·M. Returns the top-q approximation as a thin SVD (k = q).
 * torch draws G from its own generator, so the two agree only as far as the iterations converge.
 */
export function randomizedSvd(
  m: number,
  n: number,
  at: (i: number, j: number) => number,
  q: number,
  niter: number,
  normal: () => number,
): Svd {
  if (m < n) {
    const t = randomizedSvd(n, m, (i, j) => at(j, i), q, niter, normal);
    return { u: t.v, s: t.s, v: t.u, k: t.k };
  }
  if (!(Number.isInteger(q) && q >= 1 && q <= n))
    throw new RangeError(`randomizedSvd: q must be an integer in [1, ${n}], got ${q}`);
  const M = new Float64Array(m * n); // row-major
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) M[i * n + j] = at(i, j);
  // X [rows, q] = M·Y or Mᵀ·Y, Y row-major [cols, q]
  const times = (Y: Float64Array, transpose: boolean) => {
    const rows = transpose ? n : m;
    const inner = transpose ? m : n;
    const X = new Float64Array(rows * q);
    for (let i = 0; i < rows; i++)
      for (let l = 0; l < inner; l++) {
        const w = transpose ? M[l * n + i]! : M[i * n + l]!;
        if (w === 0) continue;
        for (let c = 0; c < q; c++) X[i * q + c] = X[i * q + c]! + w * Y[l * q + c]!;
      }
    return X;
  };
  const basis = (X: Float64Array, rows: number) => qr(rows, q, (i, j) => X[i * q + j]!).q;
  const G = new Float64Array(n * q);
  for (let i = 0; i < G.length; i++) G[i] = normal();
  let Q = basis(times(G, false), m);
  for (let it = 0; it < niter; it++) {
    Q = basis(times(Q, true), n);
    Q = basis(times(Q, false), m);
  }
  // Bm = Qᵀ·M [q, n]; its SVD Ub·S·Vᵀ gives M ≈ (Q·Ub)·S·Vᵀ
  const Bm = new Float64Array(q * n);
  for (let l = 0; l < m; l++)
    for (let c = 0; c < q; c++) {
      const w = Q[l * q + c]!;
      for (let j = 0; j < n; j++) Bm[c * n + j] = Bm[c * n + j]! + w * M[l * n + j]!;
    }
  const small = svd(q, n, (i, j) => Bm[i * n + j]!);
  const u = new Float64Array(m * q);
  for (let i = 0; i < m; i++)
    for (let c = 0; c < q; c++) {
      let sum = 0;
      for (let l = 0; l < q; l++) sum += Q[i * q + l]! * small.u[l * small.k + c]!;
      u[i * q + c] = sum;
    }
  return { u, s: small.s, v: small.v, k: q };
}

/** A singular value counts toward the effective rank when it is above this fraction of the largest. */
export const EFFECTIVE_RANK_TOL = 1e-3;

export interface DeltaStats {
  /** ‖s·B·A‖_F, from the Gram-matrix trace. */
  normF: number;
  /** The r singular values of s·B·A, descending (zeros included). */
  singular: number[];
  /** How many singular values exceed EFFECTIVE_RANK_TOL·σ_max (0 when ΔW = 0). */
  effectiveRank: number;
}

/** ‖ΔW‖_F and the singular values of ΔW = scale·B·A, for B [out, r] and A [r, in] row-major. */
export function deltaStats(
  B: Float32Array,
  A: Float32Array,
  out: number,
  r: number,
  inF: number,
  scale: number,
): DeltaStats {
  if (B.length !== out * r || A.length !== r * inF)
    throw new RangeError(
      `deltaStats: B has ${B.length} values, A ${A.length}; expected ${out}×${r} and ${r}×${inF}`,
    );
  // Gram matrices BᵀB and AAᵀ (r×r), then tr(G_B·G_A) = Σ G_B[i][j]·G_A[j][i]
  const gb = new Float64Array(r * r);
  const ga = new Float64Array(r * r);
  // BᵀB as a sum of the rows' outer products (B is row-major [out, r]: each row read once, in order)
  for (let k = 0; k < out; k++) {
    const row = k * r;
    for (let i = 0; i < r; i++) {
      const bi = B[row + i]!;
      for (let j = i; j < r; j++) gb[i * r + j] = gb[i * r + j]! + bi * B[row + j]!;
    }
  }
  for (let i = 0; i < r; i++)
    for (let j = i; j < r; j++) {
      let sa = 0;
      for (let k = 0; k < inF; k++) sa += A[i * inF + k]! * A[j * inF + k]!;
      gb[j * r + i] = gb[i * r + j]!;
      ga[i * r + j] = ga[j * r + i] = sa;
    }
  let tr = 0;
  for (let i = 0; i < r; i++) for (let j = 0; j < r; j++) tr += gb[i * r + j]! * ga[j * r + i]!;
  const s = Math.abs(scale);
  const rb = qrR(out, r, (i, j) => B[i * r + j]!);
  const ra = qrR(inF, r, (i, j) => A[j * inF + i]!); // Aᵀ [in, r]
  // core = R_B · R_Aᵀ
  const core = new Float64Array(r * r);
  for (let i = 0; i < r; i++)
    for (let j = 0; j < r; j++) {
      let sum = 0;
      for (let k = 0; k < r; k++) sum += rb[i * r + k]! * ra[j * r + k]!;
      core[i * r + j] = sum;
    }
  const singular = [...singularValues(core, r)].map((x) => x * s);
  const max = singular[0] ?? 0;
  const effectiveRank = max > 0 ? singular.filter((x) => x > EFFECTIVE_RANK_TOL * max).length : 0;
  return { normF: s * Math.sqrt(Math.max(0, tr)), singular, effectiveRank };
}
