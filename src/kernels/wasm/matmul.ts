/**
 * GEMM through the wasm kernel: copies the operands into the arena (packing then reads them, transposed
 * if asked), splits the output between threads and copies the result back.
 * out[b]: [M, N] (+)= op(a[b]): [M, K] @ op(b[b]): [K, N]
 */
import type { MatmulDims } from "../backend.js";
import type { WasmOp } from "./runtime.js";
import { ranges } from "./threads.js";

/** Below this many FLOPs per thread a split costs more than it saves. Waking a worker and waiting for it
 *  costs about 10-20 us on this 2-core machine (a split 64x64x64 GEMM: 0.024 ms against 0.014 ms on one
 *  thread); 4 MFLOP is about 90 us of work per thread at 45 GFLOP/s, so the split wins clearly. */
export const MIN_FLOPS_PER_THREAD = 4e6;
const MR = 4;
const NR = 8;

/** The per-thread ranges [p0, p1, i0, i1, j0, j1] of one GEMM. */
export function planGemm(d: MatmulDims, threads: number): number[][] {
  const { batch, M, N, K } = d;
  const flops = 2 * batch * M * N * Math.max(K, 1);
  const t = Math.max(1, Math.min(threads, Math.floor(flops / MIN_FLOPS_PER_THREAD)));
  if (t === 1) return [[0, batch, 0, M, 0, N]];
  // batch items own disjoint outputs unless strideOut is 0 (then every item writes the same block)
  const batchOwnsOutput = d.strideOut >= M * N;
  if (batchOwnsOutput && (batch % t === 0 || batch >= 4 * t)) {
    return ranges(batch, t).map(([p0, p1]) => [p0, p1, 0, M, 0, N]);
  }
  if (!batchOwnsOutput && batch > 1) return [[0, batch, 0, M, 0, N]];
  // split the longer side of the output in whole register tiles
  if (N / NR >= M / MR) return ranges(N, t, NR).map(([j0, j1]) => [0, batch, 0, M, j0, j1]);
  return ranges(M, t, MR).map(([i0, i1]) => [0, batch, i0, i1, 0, N]);
}

// out[b]: [M, N] (+)= op(a[b]): [M, K] @ op(b[b]): [K, N]
export const matmul: WasmOp<"matmul"> = ({ heap, threads }, out, a, b, d) => {
  const { batch, M, N, K, transA, transB, strideA, strideB, strideOut, accumulate } = d;
  if (batch === 0 || M === 0 || N === 0) return;
  const nA = (batch - 1) * strideA + M * K;
  const nB = (batch - 1) * strideB + K * N;
  const nOut = (batch - 1) * strideOut + M * N;
  heap.reset();
  const pa = heap.put(a, nA);
  const pb = heap.put(b, nB);
  const po = accumulate ? heap.put(out, nOut) : heap.alloc(nOut * 4);
  const plan = planGemm(d, threads.count);
  const scratchBytes = heap.k.gemmScratchBytes!();
  const scratch = heap.alloc(scratchBytes * plan.length);
  const common = [po, pa, pb, M, N, K, +transA, +transB, strideA, strideB, strideOut, +accumulate];
  threads.run(
    heap,
    "gemm",
    plan.map((r, t) => [...common, scratch + t * scratchBytes, ...r]),
  );
  heap.get(out, po, nOut);
};
