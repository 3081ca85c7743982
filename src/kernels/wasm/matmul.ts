/**
 * GEMM through the wasm kernel: copies the operands into the arena (packing then reads them, transposed
 * if asked), splits the output between threads and copies the result back.
 * out[b]: [M, N] (+)= op(a[b]): [M, K] @ op(b[b]): [K, N]
 *
 * A single product whose operands are large (the lm head: B [50257, 768] is 154 MB) runs in chunks of
 * output rows, output columns or whole KC blocks of the depth, each copied compactly into the arena, so
 * the arena (which never shrinks) stays bounded by about `maxChunkFloats()` floats per operand. Chunks
 * split no sum but the depth, and the depth only at multiples of the kernel's KC block: the kernel adds
 * each KC block's partial sum into the output in ascending order whether or not it is chunked, so the
 * results are bit-identical to the unchunked call.
 */
import { isHalf, type MatmulDims } from "../backend.js";
import { decodeHalf, roundToBf16 } from "../ref/half.js";
import type { Heap } from "./heap.js";
import { maxChunkFloats, type WasmOp, type WasmRuntime } from "./runtime.js";
import { ranges } from "./threads.js";

/** Below this many FLOPs per thread a split costs more than it saves. Waking a worker and waiting for it
 *  costs about 10-20 us on this 2-core machine (a split 64x64x64 GEMM: 0.024 ms against 0.014 ms on one
 *  thread); 4 MFLOP is about 90 us of work per thread at 45 GFLOP/s, so the split wins clearly. */
export const MIN_FLOPS_PER_THREAD = 4e6;
const MR = 4;
const NR = 8;
/** The kernel's depth block (assembly/gemm.ts KC): depth chunks start at multiples of it. */
const KC = 256;

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

/** Runs the kernel on operands already in the arena, split between threads. */
function runGemm(rt: WasmRuntime, po: number, pa: number, pb: number, d: MatmulDims): void {
  const { heap, threads } = rt;
  const plan = planGemm(d, threads.count);
  const scratchBytes = heap.k.gemmScratchBytes!();
  const scratch = heap.alloc(scratchBytes * plan.length);
  const { M, N, K, transA, transB, strideA, strideB, strideOut, accumulate } = d;
  const common = [po, pa, pb, M, N, K, +transA, +transB, strideA, strideB, strideOut, +accumulate];
  threads.run(
    heap,
    "gemm",
    plan.map((r, t) => [...common, scratch + t * scratchBytes, ...r]),
  );
}

/** Copies x[r0:r1, c0:c1] (x: row stride ld) into a fresh compact [r1-r0, c1-c0] block; returns its offset. */
function putBlock(
  h: Heap,
  x: Float32Array,
  ld: number,
  r0: number,
  r1: number,
  c0: number,
  c1: number,
): number {
  const w = c1 - c0;
  if (w === ld) return h.put(x.subarray(r0 * ld, r1 * ld));
  const at = h.alloc((r1 - r0) * w * 4);
  const view = h.f32(at, (r1 - r0) * w);
  for (let r = r0; r < r1; r++) view.set(x.subarray(r * ld + c0, r * ld + c1), (r - r0) * w);
  return at;
}

/** Copies the compact block at `at` back into out[r0:r1, c0:c1] (out: row stride ld). */
function getBlock(
  h: Heap,
  out: Float32Array,
  ld: number,
  at: number,
  r0: number,
  r1: number,
  c0: number,
  c1: number,
) {
  const w = c1 - c0;
  const view = h.f32(at, (r1 - r0) * w);
  if (w === ld) {
    out.set(view, r0 * ld);
    return;
  }
  for (let r = r0; r < r1; r++) out.set(view.subarray((r - r0) * w, (r - r0 + 1) * w), r * ld + c0);
}

/** Rounds x up to a multiple of unit. */
const alignUp = (x: number, unit: number) => Math.ceil(x / unit) * unit;

/** Chunk sizes [mc, nc, kc] so that no block (A: mc·kc, B: kc·nc, out: mc·nc) exceeds maxChunkFloats()
 *  where the tile units allow: the largest over-limit dimension shrinks first, then chunks are evened out. */
export function chunkSizes(M: number, N: number, K: number): [number, number, number] {
  const lim = maxChunkFloats();
  const c = [M, N, K];
  const unit = [MR, NR, KC];
  for (let iter = 0; iter < 3; iter++) {
    const [m, n, k] = c as [number, number, number];
    const over = [m * k > lim || m * n > lim, k * n > lim || m * n > lim, m * k > lim || k * n > lim];
    // the other two dims each block of dimension x meets: m with k (A) and n (out); n with k and m; k with m and n
    const others = [Math.max(k, n), Math.max(k, m), Math.max(m, n)];
    let pick = -1;
    for (let x = 0; x < 3; x++) if (over[x] && c[x]! > unit[x]! && (pick < 0 || c[x]! > c[pick]!)) pick = x;
    if (pick < 0) break;
    const u = unit[pick]!;
    const full = [M, N, K][pick]!;
    const fit = Math.max(u, Math.floor(lim / Math.max(others[pick]!, 1) / u) * u);
    c[pick] = Math.min(full, alignUp(Math.ceil(full / Math.ceil(full / fit)), u));
  }
  return c as [number, number, number];
}

/** One product (batch 1) in chunks: output rows [i0, i1), columns [j0, j1), depth [k0, k1) at a time. */
function chunkedGemm(
  rt: WasmRuntime,
  out: Float32Array,
  a: Float32Array,
  b: Float32Array,
  d: MatmulDims,
): void {
  const { M, N, K, transA, transB } = d;
  const [mc, nc, kc] = chunkSizes(M, N, K);
  const { heap: h } = rt;
  for (let i0 = 0; i0 < M; i0 += mc) {
    const i1 = Math.min(M, i0 + mc);
    for (let j0 = 0; j0 < N; j0 += nc) {
      const j1 = Math.min(N, j0 + nc);
      for (let k0 = 0; k0 < K || k0 === 0; k0 += kc) {
        const k1 = Math.min(K, k0 + kc);
        const [m, n, k] = [i1 - i0, j1 - j0, k1 - k0];
        const acc = d.accumulate || k0 > 0;
        h.reset();
        const pa = transA ? putBlock(h, a, M, k0, k1, i0, i1) : putBlock(h, a, K, i0, i1, k0, k1);
        const pb = transB ? putBlock(h, b, K, j0, j1, k0, k1) : putBlock(h, b, N, k0, k1, j0, j1);
        const po = acc ? putBlock(h, out, N, i0, i1, j0, j1) : h.alloc(m * n * 4);
        const sub = {
          ...d,
          M: m,
          N: n,
          K: k,
          strideA: m * k,
          strideB: k * n,
          strideOut: m * n,
          accumulate: acc,
        };
        runGemm(rt, po, pa, pb, sub);
        getBlock(h, out, N, po, i0, i1, j0, j1);
        if (K === 0) break;
      }
    }
  }
}

// out[b]: [M, N] (+)= op(a[b]): [M, K] @ op(b[b]): [K, N]
export const matmul: WasmOp<"matmul"> = (rt, out, a, w, d) => {
  // a 16-bit weight: decoded into f32 (and a rounded to bf16 for bf16), the ref semantics; the arena copy
  // would copy it anyway
  if (isHalf(w) && w.dtype === "bf16") a = roundToBf16(a);
  const b = isHalf(w) ? decodeHalf(w) : w;
  const { batch, M, N, K, strideA, strideB, strideOut, accumulate } = d;
  if (batch === 0 || M === 0 || N === 0) return;
  const lim = maxChunkFloats();
  if (batch === 1 && (M * K > lim || K * N > lim || M * N > lim)) {
    chunkedGemm(rt, out, a, b, d);
    return;
  }
  const { heap } = rt;
  const nA = (batch - 1) * strideA + M * K;
  const nB = (batch - 1) * strideB + K * N;
  const nOut = (batch - 1) * strideOut + M * N;
  heap.reset();
  const pa = heap.put(a, nA);
  const pb = heap.put(b, nB);
  const po = accumulate ? heap.put(out, nOut) : heap.alloc(nOut * 4);
  runGemm(rt, po, pa, pb, d);
  heap.get(out, po, nOut);
};
