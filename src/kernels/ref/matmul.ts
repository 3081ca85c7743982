/** Reference GEMM: plain loops, the oracle for every faster matmul. */
import { isHalf, type MatmulDims, type WeightArray } from "../backend.js";
import { decodeHalf, roundToBf16 } from "./half.js";

// out[b]: [M, N] = op(a[b]): [M, K] @ op(b[b]): [K, N]
export function matmul(out: Float32Array, a: Float32Array, w: WeightArray, d: MatmulDims): void {
  // a 16-bit weight: decoded exactly; with bf16, a is rounded to bf16 too (see HalfArray)
  if (isHalf(w) && w.dtype === "bf16") a = roundToBf16(a);
  const b = isHalf(w) ? decodeHalf(w) : w;
  const { batch, M, N, K, transA, transB, strideA, strideB, strideOut, accumulate } = d;
  // element (i, k) of op(A) and (k, j) of op(B)
  const aRow = transA ? 1 : K;
  const aCol = transA ? M : 1;
  const bRow = transB ? 1 : N;
  const bCol = transB ? K : 1;
  const acc = new Float32Array(N);
  for (let p = 0; p < batch; p++) {
    const oa = p * strideA;
    const ob = p * strideB;
    const oo = p * strideOut;
    for (let i = 0; i < M; i++) {
      acc.fill(0);
      for (let k = 0; k < K; k++) {
        const av = a[oa + i * aRow + k * aCol]!;
        if (av === 0) continue;
        const bk = ob + k * bRow;
        for (let j = 0; j < N; j++) acc[j]! += av * b[bk + j * bCol]!;
      }
      const row = oo + i * N;
      if (accumulate) for (let j = 0; j < N; j++) out[row + j]! += acc[j]!;
      else out.set(acc, row);
    }
  }
}
