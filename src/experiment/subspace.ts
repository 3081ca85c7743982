/**
 * The paper's normalised subspace similarity (Hu et al. 2021, Section 7.2, Figures 3 and 4): how much
 * of the top-i right-singular directions of one LoRA A [r1, k] lie in the top-j of another [r2, k],
 *   φ(A1, A2, i, j) = ‖U_iᵀ U_j‖²_F / min(i, j),   in [0, 1],
 * where U_i holds the first i right-singular vectors (k-dimensional) as columns.
 */

/**
 * Eigenvalues (descending) and eigenvectors (the columns of `vectors`, row-major n×n) of a symmetric
 * n×n matrix, by cyclic Jacobi rotations in f64. Fine for the r×r matrices here (r ≤ a few hundred).
 */
export function symmetricEigen(m: Float64Array, n: number): { values: Float64Array; vectors: Float64Array } {
  const a = Float64Array.from(m);
  const v = new Float64Array(n * n);
  for (let i = 0; i < n; i++) v[i * n + i] = 1;
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p * n + q]! ** 2;
    if (off < 1e-30) break;
    for (let p = 0; p < n - 1; p++)
      for (let q = p + 1; q < n; q++) {
        const apq = a[p * n + q]!;
        if (apq === 0) continue;
        const theta = (a[q * n + q]! - a[p * n + p]!) / (2 * apq);
        const t = (theta >= 0 ? 1 : -1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) {
          // rotate rows and columns p, q of a (a stays symmetric), and the columns of v
          const akp = a[k * n + p]!;
          const akq = a[k * n + q]!;
          a[k * n + p] = c * akp - s * akq;
          a[k * n + q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) {
          const apk = a[p * n + k]!;
          const aqk = a[q * n + k]!;
          a[p * n + k] = c * apk - s * aqk;
          a[q * n + k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) {
          const vkp = v[k * n + p]!;
          const vkq = v[k * n + q]!;
          v[k * n + p] = c * vkp - s * vkq;
          v[k * n + q] = s * vkp + c * vkq;
        }
      }
  }
  const order = Array.from({ length: n }, (_, i) => i).sort((x, y) => a[y * n + y]! - a[x * n + x]!);
  const values = Float64Array.from(order, (i) => a[i * n + i]!);
  const vectors = new Float64Array(n * n);
  order.forEach((col, j) => {
    for (let k = 0; k < n; k++) vectors[k * n + j] = v[k * n + col]!;
  });
  return { values, vectors };
}

/**
 * The right-singular vectors of A [r, k] (row-major), strongest first, as r rows of length k:
 * from the eigenvectors u of A·Aᵀ (r×r), v = Aᵀu / σ. A direction with σ = 0 is left as zeros.
 */
export function rightSingularVectors(A: Float32Array | Float64Array, r: number, k: number): Float64Array {
  const gram = new Float64Array(r * r);
  for (let i = 0; i < r; i++)
    for (let j = i; j < r; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += A[i * k + t]! * A[j * k + t]!;
      gram[i * r + j] = gram[j * r + i] = s;
    }
  const { values, vectors } = symmetricEigen(gram, r);
  const out = new Float64Array(r * k);
  for (let d = 0; d < r; d++) {
    const sigma = Math.sqrt(Math.max(0, values[d]!));
    if (sigma <= 1e-12 * Math.sqrt(Math.max(values[0]!, 0))) continue;
    for (let t = 0; t < k; t++) {
      let s = 0;
      for (let i = 0; i < r; i++) s += A[i * k + t]! * vectors[i * r + d]!;
      out[d * k + t] = s / sigma;
    }
  }
  return out;
}

/**
 * φ(A1, A2, i, j) for every i ≤ r1 and j ≤ r2, as rows i-1 of a [r1, r2] table (row-major): A1 is
 * [r1, k] and A2 [r2, k].
 */
export function subspaceSimilarity(
  A1: Float32Array | Float64Array,
  r1: number,
  A2: Float32Array | Float64Array,
  r2: number,
  k: number,
): Float64Array {
  const u1 = rightSingularVectors(A1, r1, k);
  const u2 = rightSingularVectors(A2, r2, k);
  // squared overlaps of direction a of A1 with direction b of A2, then 2-D prefix sums
  const out = new Float64Array(r1 * r2);
  for (let a = 0; a < r1; a++)
    for (let b = 0; b < r2; b++) {
      let dot = 0;
      for (let t = 0; t < k; t++) dot += u1[a * k + t]! * u2[b * k + t]!;
      out[a * r2 + b] = dot * dot;
    }
  for (let a = 0; a < r1; a++)
    for (let b = 0; b < r2; b++) {
      const up = a > 0 ? out[(a - 1) * r2 + b]! : 0;
      const left = b > 0 ? out[a * r2 + b - 1]! : 0;
      const diag = a > 0 && b > 0 ? out[(a - 1) * r2 + b - 1]! : 0;
      out[a * r2 + b] = out[a * r2 + b]! + up + left - diag;
    }
  for (let a = 0; a < r1; a++)
    for (let b = 0; b < r2; b++) out[a * r2 + b] = out[a * r2 + b]! / Math.min(a + 1, b + 1);
  return out;
}
