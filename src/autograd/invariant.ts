/**
 * Batch-invariant mode (as thinking-machines' batch_invariant_ops swaps in kernels whose rows do not
 * depend on the batch): inside `batchInvariant(fn)`, a matmul with a transposed weight (every Linear's
 * x @ W^T) runs in chunks of at most the backend's `invariantRows` rows, so each row gets the bits it
 * gets alone (M = 1, the single-sequence decode). A batched decode step runs under it: a sequence's
 * greedy tokens are then the same alone or in any batch. Outside it nothing changes.
 */
import { backend, singleMatmul, type WeightArray } from "../kernels/index.js";

let depth = 0;

/** Runs fn with every x @ W^T product split into batch-invariant row chunks. */
export function batchInvariant<T>(fn: () => T): T {
  depth++;
  try {
    return fn();
  } finally {
    depth--;
  }
}

/** The most rows one x @ W^T product may take now (Infinity outside batch-invariant mode). */
export function invariantChunk(): number {
  return depth > 0 ? (backend().invariantRows ?? Number.POSITIVE_INFINITY) : Number.POSITIVE_INFINITY;
}

/**
 * out [m, N] = x [m, K] @ op(w) (w [K, N], or [N, K] with transB), one backend matmul, or in
 * batch-invariant mode and with transB, one `rowInvariant` product per chunk of at most
 * `invariantChunk()` rows.
 */
export function matmulRows(
  out: Float32Array,
  x: Float32Array,
  w: WeightArray,
  m: number,
  N: number,
  K: number,
  transB: boolean,
): void {
  const invariant = transB && depth > 0;
  const chunk = invariant ? Math.min(m, invariantChunk()) : m;
  for (let i = 0; i < m; i += chunk) {
    const c = Math.min(chunk, m - i);
    backend().matmul(
      c === m ? out : out.subarray(i * N, (i + c) * N),
      c === m ? x : x.subarray(i * K, (i + c) * K),
      w,
      singleMatmul(c, N, K, { transB, rowInvariant: invariant }),
    );
  }
}
