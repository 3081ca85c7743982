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
 * The longest prompt (in tokens) prefilled in batch-invariant mode; see `invariantPrefill`. 8: the rows
 * the native backend's products take through the GEMV anyway (native/src/gemm.h GEMV_ROWS), so
 * `generate` keeps its kernels and speed; at 64 its prefills of 9 to 64 tokens would go through the
 * row-invariant GEMV instead of the GEMM, about half the rate on a wide model.
 */
export const INVARIANT_PREFILL = 8;

/**
 * Whether a prompt of T tokens is prefilled in batch-invariant mode: up to INVARIANT_PREFILL tokens (and
 * the backend's invariantRows), by `generate` and by a batched serve step alike, so that a server can
 * prefill several short prompts in one pass with its decodes and each still gets `generate`'s bits
 * (16 new prompts of 7 tokens on stories260K: 3.8-4.4 ms in one pass, 5.7-6.3 ms one by one, a Xeon).
 * A longer prompt is prefilled alone, in both, with the backend's fastest products (a GEMM whose rows
 * may depend on M): there the products outweigh the per-op costs a shared pass saves.
 */
export function invariantPrefill(T: number): boolean {
  return T <= Math.min(INVARIANT_PREFILL, backend().invariantRows ?? INVARIANT_PREFILL);
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
