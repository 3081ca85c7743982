/**
 * The size and spectrum of a LoRA update ΔW = s·B·A (B [out, r], A [r, in]) without forming ΔW:
 *   ‖B·A‖_F² = tr((BᵀB)(AAᵀ)), two r×r Gram matrices;
 *   singular values of B·A = those of the r×r core R_B·R_Aᵀ, where B = Q_B·R_B and Aᵀ = Q_A·R_A are
 *   Householder QR factorisations (B·A = Q_B·(R_B·R_Aᵀ)·Q_Aᵀ with orthonormal Q_B, Q_A), taken by a
 *   one-sided Jacobi SVD. Cost O((out + in)·r²), all in f64.
 * `qr` and `svd` also give the factors, for the best rank-k approximation of a sum of LoRA updates
 * (lora/combine.ts).
 */

/** The r×r upper-triangular R of a Householder QR of the m×n matrix M (m >= n), M[i][j] = at(i, j). */
export function qrR(m: number, n: number, at: (i: number, j: number) => number): Float64Array {
  return householder(m, n, at).r;
}

/**
 * The thin QR of the m×n matrix M (m >= n), M[i][j] = at(i, j): Q [m, n] with orthonormal columns and R
 * [n, n] upper triangular, both row-major, M = Q·R. Q is the product of the reflectors applied to the
 * first n columns of the identity.
 */
export function qr(
  m: number,
  n: number,
  at: (i: number, j: number) => number,
): { q: Float64Array; r: Float64Array } {
  const { r, reflectors } = householder(m, n, at);
  const q = new Float64Array(m * n); // column-major while building: col j holds rows 0..m-1
  for (let j = 0; j < n; j++) q[j * m + j] = 1;
  // Q = H_0·H_1·…·H_{n-1}·I[:, :n]: apply the reflectors last to first
  for (let k = n - 1; k >= 0; k--) {
    const v = reflectors[k];
    if (!v) continue;
    let vnorm = 0;
    for (let i = k; i < m; i++) vnorm += v[i]! * v[i]!;
    for (let j = 0; j < n; j++) {
      const cj = j * m;
      let dot = 0;
      for (let i = k; i < m; i++) dot += v[i]! * q[cj + i]!;
      const f = (2 * dot) / vnorm;
      for (let i = k; i < m; i++) q[cj + i] = q[cj + i]! - f * v[i]!;
    }
  }
  const rowMajor = new Float64Array(m * n);
  for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) rowMajor[i * n + j] = q[j * m + i]!;
  return { q: rowMajor, r };
}

/** Householder QR of M (m >= n): R (row-major n×n) and each step's reflector v (null: identity). */
function householder(
  m: number,
  n: number,
  at: (i: number, j: number) => number,
): { r: Float64Array; reflectors: Array<Float64Array | null> } {
  if (m < n) throw new RangeError(`qrR needs at least as many rows as columns, got ${m}×${n}`);
  // column-major copy: col j holds rows 0..m-1
  const a = new Float64Array(m * n);
  for (let j = 0; j < n; j++) for (let i = 0; i < m; i++) a[j * m + i] = at(i, j);
  const reflectors: Array<Float64Array | null> = [];
  for (let k = 0; k < n; k++) {
    const ck = k * m;
    let norm = 0;
    for (let i = k; i < m; i++) norm += a[ck + i]! * a[ck + i]!;
    norm = Math.sqrt(norm);
    if (norm === 0) {
      reflectors.push(null); // a zero column: the reflection is the identity
      continue;
    }
    const alpha = a[ck + k]! >= 0 ? -norm : norm; // the sign that avoids cancellation in x0 - alpha
    const v = new Float64Array(m);
    let vnorm = 0;
    for (let i = k; i < m; i++) {
      const x = a[ck + i]! - (i === k ? alpha : 0);
      v[i] = x;
      vnorm += x * x;
    }
    reflectors.push(v);
    // H = I - 2·v·vᵀ/(vᵀv) applied to the columns k..n-1 (column k becomes [alpha, 0, ...])
    for (let j = k; j < n; j++) {
      const cj = j * m;
      let dot = 0;
      for (let i = k; i < m; i++) dot += v[i]! * a[cj + i]!;
      const f = (2 * dot) / vnorm;
      for (let i = k; i < m; i++) a[cj + i] = a[cj + i]! - f * v[i]!;
    }
  }
  const r = new Float64Array(n * n); // row-major, upper triangular
  for (let i = 0; i < n; i++) for (let j = i; j < n; j++) r[i * n + j] = a[j * m + i]!;
  return { r, reflectors };
}

/**
 * The singular values (descending) of a square n×n row-major matrix, by one-sided Jacobi (Hestenes):
 * rotate pairs of columns until every pair is orthogonal to rounding; the column norms are then the
 * singular values. Converges quadratically; accurate to a few ulps of σ_max for small n.
 */
export function singularValues(c: Float64Array, n: number): Float64Array {
  return jacobi(c, n, false).s;
}

/**
 * The SVD C = U·diag(s)·Vᵀ of a square n×n row-major matrix (s descending; U and V n×n row-major,
 * orthonormal columns; a column of U for a zero singular value is zero), by the same one-sided Jacobi
 * as singularValues, with the rotations accumulated into V.
 */
export function svd(c: Float64Array, n: number): { u: Float64Array; s: Float64Array; v: Float64Array } {
  const { a, s, v } = jacobi(c, n, true);
  const order = [...s.keys()].sort((i, j) => s[j]! - s[i]!);
  const u = new Float64Array(n * n);
  const vs = new Float64Array(n * n);
  const ss = new Float64Array(n);
  order.forEach((col, k) => {
    ss[k] = s[col]!;
    for (let i = 0; i < n; i++) {
      vs[i * n + k] = v![i * n + col]!;
      u[i * n + k] = s[col]! > 0 ? a[i * n + col]! / s[col]! : 0;
    }
  });
  return { u, s: ss, v: vs };
}

/** One-sided Jacobi on a copy of C: the rotated columns (C·V), their norms (unsorted unless !withV), V. */
function jacobi(
  c: Float64Array,
  n: number,
  withV: boolean,
): { a: Float64Array; s: Float64Array; v: Float64Array | null } {
  const a = Float64Array.from(c);
  const v = withV ? new Float64Array(n * n) : null;
  if (v) for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 60; sweep++) {
    let rotated = false;
    for (let p = 0; p < n - 1; p++) {
      for (let q = p + 1; q < n; q++) {
        let alpha = 0;
        let beta = 0;
        let gamma = 0;
        for (let i = 0; i < n; i++) {
          const x = a[i * n + p]!;
          const y = a[i * n + q]!;
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
        for (let i = 0; i < n; i++) {
          const x = a[i * n + p]!;
          const y = a[i * n + q]!;
          a[i * n + p] = cs * x - sn * y;
          a[i * n + q] = sn * x + cs * y;
        }
        if (v)
          for (let i = 0; i < n; i++) {
            const x = v[i * n + p]!;
            const y = v[i * n + q]!;
            v[i * n + p] = cs * x - sn * y;
            v[i * n + q] = sn * x + cs * y;
          }
      }
    }
    if (!rotated) break;
  }
  const s = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let sum = 0;
    for (let i = 0; i < n; i++) sum += a[i * n + j]! ** 2;
    s[j] = Math.sqrt(sum);
  }
  return { a, s: withV ? s : s.sort().reverse(), v };
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
