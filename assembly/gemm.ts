/**
 * Register-blocked GEMM with packed panels (Goto/BLIS style, llm.c naming).
 * out[p]: [M, N] (+)= op(a[p]): [M, K] @ op(b[p]): [K, N] for p in [p0, p1), rows [i0, i1), cols [j0, j1).
 * transA: a is stored [K, M]; transB: b is stored [N, K]. Packing reads the operands transposed, so no
 * whole-operand copy is made. Every element sums over k in the same order (KC blocks, k ascending), so
 * any split of rows, columns or batch items between threads gives bit-identical results.
 */
import { madd } from "./simd";

const MR = 4; // rows of the register tile
const NR = 8; // columns of the register tile (two v128)
const KC = 256; // depth of a packed block
const MC = 128; // rows of a packed A block (MC x KC fits in L2)
const NC = 768; // columns of a packed B block (KC x NC = 768 KiB, within a 1 MiB L2)
const DIRECT_NC = 64; // up to this many columns, A is read in place instead of packed

// bytes of scratch one thread needs: edge tile + packed A block + packed B block
export function gemmScratchBytes(): i32 {
  return 256 + MC * KC * 4 + KC * NC * 4;
}

// dst rows 0..3 (stride dstStride bytes) = columns 0..3 of the 4x4 block at src (row stride ld bytes)
// @ts-ignore: decorator
@inline
function transpose4(dst: usize, dstStride: usize, src: usize, ld: usize): void {
  const r0 = v128.load(src);
  const r1 = v128.load(src + ld);
  const r2 = v128.load(src + 2 * ld);
  const r3 = v128.load(src + 3 * ld);
  const t0 = i32x4.shuffle(r0, r1, 0, 4, 1, 5);
  const t1 = i32x4.shuffle(r0, r1, 2, 6, 3, 7);
  const t2 = i32x4.shuffle(r2, r3, 0, 4, 1, 5);
  const t3 = i32x4.shuffle(r2, r3, 2, 6, 3, 7);
  v128.store(dst, i32x4.shuffle(t0, t2, 0, 1, 4, 5));
  v128.store(dst + dstStride, i32x4.shuffle(t0, t2, 2, 3, 6, 7));
  v128.store(dst + 2 * dstStride, i32x4.shuffle(t1, t3, 0, 1, 4, 5));
  v128.store(dst + 3 * dstStride, i32x4.shuffle(t1, t3, 2, 3, 6, 7));
}

// op(A)[i0:i0+mc, p0:p0+kc] -> dst: [mc/MR][kc][MR], rows past mc zero; lda: A's row stride in floats
function packA(dst: usize, a: usize, transA: bool, lda: i32, i0: i32, mc: i32, p0: i32, kc: i32): void {
  for (let ir = 0; ir < mc; ir += MR) {
    const rows = min(MR, mc - ir);
    const panel = dst + ((<usize>ir * kc) << 2);
    if (transA) {
      // (i, k) at a[k*lda + i]: MR consecutive floats per k
      const src = a + ((<usize>p0 * lda + i0 + ir) << 2);
      const ld = <usize>lda << 2;
      if (rows == MR) {
        for (let k = 0; k < kc; k++) v128.store(panel + (<usize>k << 4), v128.load(src + <usize>k * ld));
      } else {
        // rows past `rows` are never read: a select would load them (and could run off the memory)
        for (let k = 0; k < kc; k++) {
          for (let r = 0; r < MR; r++) {
            const d = panel + (<usize>(k * MR + r) << 2);
            if (r < rows) store<f32>(d, load<f32>(src + <usize>k * ld + (<usize>r << 2)));
            else store<f32>(d, 0);
          }
        }
      }
    } else {
      // (i, k) at a[i*lda + k]: 4x4 blocks are loaded as four rows and transposed in registers
      const src = a + ((<usize>(i0 + ir) * lda + p0) << 2);
      const ld = <usize>lda << 2;
      let k0 = 0;
      if (rows == MR) {
        for (; k0 + 4 <= kc; k0 += 4) {
          transpose4(panel + (<usize>k0 << 4), 16, src + (<usize>k0 << 2), ld);
        }
      }
      for (let r = 0; r < MR; r++) {
        const out = panel + (<usize>r << 2);
        const row = src + <usize>r * ld;
        if (r < rows) {
          for (let k = k0; k < kc; k++) store<f32>(out + (<usize>k << 4), load<f32>(row + (<usize>k << 2)));
        } else {
          for (let k = k0; k < kc; k++) store<f32>(out + (<usize>k << 4), 0);
        }
      }
    }
  }
}

// op(B)[p0:p0+kc, j0:j0+nc] -> dst: [nc/NR][kc][NR], columns past nc zero; ldb: B's row stride in floats
function packB(dst: usize, b: usize, transB: bool, ldb: i32, j0: i32, nc: i32, p0: i32, kc: i32): void {
  for (let jr = 0; jr < nc; jr += NR) {
    const cols = min(NR, nc - jr);
    const panel = dst + ((<usize>jr * kc) << 2);
    if (!transB) {
      // (k, j) at b[k*ldb + j]: NR consecutive floats per k
      const src = b + ((<usize>p0 * ldb + j0 + jr) << 2);
      const ld = <usize>ldb << 2;
      if (cols == NR) {
        for (let k = 0; k < kc; k++) {
          const s = src + <usize>k * ld;
          const d = panel + (<usize>k << 5);
          v128.store(d, v128.load(s));
          v128.store(d, v128.load(s, 16), 16);
        }
      } else {
        for (let k = 0; k < kc; k++) {
          for (let c = 0; c < NR; c++) {
            const d = panel + (<usize>(k * NR + c) << 2);
            if (c < cols) store<f32>(d, load<f32>(src + <usize>k * ld + (<usize>c << 2)));
            else store<f32>(d, 0);
          }
        }
      }
    } else {
      // (k, j) at b[j*ldb + k]: 4x4 blocks of the 8 stored rows are transposed in registers
      const src = b + ((<usize>(j0 + jr) * ldb + p0) << 2);
      const ld = <usize>ldb << 2;
      let k0 = 0;
      if (cols == NR) {
        for (; k0 + 4 <= kc; k0 += 4) {
          const s = src + (<usize>k0 << 2);
          const d = panel + (<usize>k0 << 5);
          transpose4(d, 32, s, ld);
          transpose4(d + 16, 32, s + 4 * ld, ld);
        }
      }
      for (let c = 0; c < NR; c++) {
        const out = panel + (<usize>c << 2);
        const row = src + <usize>c * ld;
        if (c < cols) {
          for (let k = k0; k < kc; k++) store<f32>(out + (<usize>k << 5), load<f32>(row + (<usize>k << 2)));
        } else {
          for (let k = k0; k < kc; k++) store<f32>(out + (<usize>k << 5), 0);
        }
      }
    }
  }
}

// @ts-ignore: decorator
@inline
// c: [rows<=MR, cols<=NR] tile of out (row stride ldc bytes) = or += ap: [kc][MR] @ bp: [kc][NR]
function kernel4x8(
  ap: usize,
  ars: usize,
  aks: usize,
  bp: usize,
  kc: i32,
  c: usize,
  ldc: usize,
  overwrite: bool,
  rows: i32,
  cols: i32,
  tile: usize,
): void {
  let c00 = f32x4.splat(0);
  let c01 = f32x4.splat(0);
  let c10 = f32x4.splat(0);
  let c11 = f32x4.splat(0);
  let c20 = f32x4.splat(0);
  let c21 = f32x4.splat(0);
  let c30 = f32x4.splat(0);
  let c31 = f32x4.splat(0);
  if (ars == 4 && aks == 16) {
    // packed A: [kc][MR]
    const end = ap + (<usize>kc << 4);
    while (ap < end) {
      const b0 = v128.load(bp);
      const b1 = v128.load(bp, 16);
      let a = v128.load32_splat(ap);
      c00 = madd(a, b0, c00);
      c01 = madd(a, b1, c01);
      a = v128.load32_splat(ap, 4);
      c10 = madd(a, b0, c10);
      c11 = madd(a, b1, c11);
      a = v128.load32_splat(ap, 8);
      c20 = madd(a, b0, c20);
      c21 = madd(a, b1, c21);
      a = v128.load32_splat(ap, 12);
      c30 = madd(a, b0, c30);
      c31 = madd(a, b1, c31);
      ap += 16;
      bp += 32;
    }
  } else {
    // A read in place; rows past `rows` repeat the last row (their results are dropped)
    const a1 = ap + (rows > 1 ? ars : 0);
    const a2 = ap + (rows > 2 ? 2 * ars : rows > 1 ? ars : 0);
    const a3 = ap + <usize>(rows - 1) * ars;
    let o: usize = 0;
    const end = <usize>kc * aks;
    while (o < end) {
      const b0 = v128.load(bp);
      const b1 = v128.load(bp, 16);
      let a = v128.load32_splat(ap + o);
      c00 = madd(a, b0, c00);
      c01 = madd(a, b1, c01);
      a = v128.load32_splat(a1 + o);
      c10 = madd(a, b0, c10);
      c11 = madd(a, b1, c11);
      a = v128.load32_splat(a2 + o);
      c20 = madd(a, b0, c20);
      c21 = madd(a, b1, c21);
      a = v128.load32_splat(a3 + o);
      c30 = madd(a, b0, c30);
      c31 = madd(a, b1, c31);
      o += aks;
      bp += 32;
    }
  }
  if (rows == MR && cols == NR) {
    if (!overwrite) {
      c00 = f32x4.add(c00, v128.load(c));
      c01 = f32x4.add(c01, v128.load(c, 16));
      c10 = f32x4.add(c10, v128.load(c + ldc));
      c11 = f32x4.add(c11, v128.load(c + ldc, 16));
      c20 = f32x4.add(c20, v128.load(c + 2 * ldc));
      c21 = f32x4.add(c21, v128.load(c + 2 * ldc, 16));
      c30 = f32x4.add(c30, v128.load(c + 3 * ldc));
      c31 = f32x4.add(c31, v128.load(c + 3 * ldc, 16));
    }
    v128.store(c, c00);
    v128.store(c, c01, 16);
    v128.store(c + ldc, c10);
    v128.store(c + ldc, c11, 16);
    v128.store(c + 2 * ldc, c20);
    v128.store(c + 2 * ldc, c21, 16);
    v128.store(c + 3 * ldc, c30);
    v128.store(c + 3 * ldc, c31, 16);
    return;
  }
  // edge tile: spill to scratch, then copy the valid part
  v128.store(tile, c00);
  v128.store(tile, c01, 16);
  v128.store(tile, c10, 32);
  v128.store(tile, c11, 48);
  v128.store(tile, c20, 64);
  v128.store(tile, c21, 80);
  v128.store(tile, c30, 96);
  v128.store(tile, c31, 112);
  for (let r = 0; r < rows; r++) {
    for (let j = 0; j < cols; j++) {
      const dst = c + <usize>r * ldc + (<usize>j << 2);
      const v = load<f32>(tile + (<usize>(r * NR + j) << 2));
      store<f32>(dst, overwrite ? v : load<f32>(dst) + v);
    }
  }
}

// c: [M, N] (row stride ldc) (+)= op(a) @ op(b), rows [i0, i1), cols [j0, j1); lda, ldb, ldc are the
// row strides in floats of a, b and c as stored (a: [M, lda] or, transposed, [K, lda]; b likewise)
export function gemmBlock(
  C: usize,
  A: usize,
  B: usize,
  M: i32,
  N: i32,
  K: i32,
  lda: i32,
  ldb: i32,
  ldc: i32,
  transA: bool,
  transB: bool,
  accumulate: bool,
  scratch: usize,
  i0: i32,
  i1: i32,
  j0: i32,
  j1: i32,
): void {
  const tile = scratch;
  const pa = scratch + 256;
  const pb = pa + MC * KC * 4;
  const ldcb = <usize>ldc << 2;
  if (K == 0) {
    if (!accumulate) for (let i = i0; i < i1; i++) memory.fill(C + <usize>i * ldcb + (<usize>j0 << 2), 0, <usize>(j1 - j0) << 2);
    return;
  }
  // a few column panels do not repay packing A: the kernel then reads it in place
  const ars: usize = transA ? 4 : <usize>lda << 2;
  const aks: usize = transA ? <usize>lda << 2 : 4;
  for (let jc = j0; jc < j1; jc += NC) {
    const nc = min(NC, j1 - jc);
    const direct = nc <= DIRECT_NC;
    for (let pc = 0; pc < K; pc += KC) {
      const kc = min(KC, K - pc);
      packB(pb, B, transB, ldb, jc, nc, pc, kc);
      const overwrite = pc == 0 && !accumulate;
      for (let ic = i0; ic < i1; ic += MC) {
        const mc = min(MC, i1 - ic);
        if (!direct) packA(pa, A, transA, lda, ic, mc, pc, kc);
        for (let jr = 0; jr < nc; jr += NR) {
          const bp = pb + ((<usize>jr * kc) << 2);
          for (let ir = 0; ir < mc; ir += MR) {
            const c = C + <usize>(ic + ir) * ldcb + (<usize>(jc + jr) << 2);
            const rows = min(MR, mc - ir);
            const cols = min(NR, nc - jr);
            if (direct) {
              const ap = A + <usize>(ic + ir) * ars + <usize>pc * aks;
              kernel4x8(ap, ars, aks, bp, kc, c, ldcb, overwrite, rows, cols, tile);
            } else {
              kernel4x8(pa + ((<usize>ir * kc) << 2), 4, 16, bp, kc, c, ldcb, overwrite, rows, cols, tile);
            }
          }
        }
      }
    }
  }
}

// out[p]: [M, N] (+)= op(a[p]) @ op(b[p]) over p in [p0, p1), rows [i0, i1), cols [j0, j1); strides in elements
export function gemm(
  out: usize,
  a: usize,
  b: usize,
  M: i32,
  N: i32,
  K: i32,
  transA: bool,
  transB: bool,
  strideA: i32,
  strideB: i32,
  strideOut: i32,
  accumulate: bool,
  scratch: usize,
  p0: i32,
  p1: i32,
  i0: i32,
  i1: i32,
  j0: i32,
  j1: i32,
): void {
  const lda = transA ? M : K;
  const ldb = transB ? K : N;
  for (let p = p0; p < p1; p++) {
    const A = a + ((<usize>p * strideA) << 2);
    const B = b + ((<usize>p * strideB) << 2);
    const C = out + ((<usize>p * strideOut) << 2);
    gemmBlock(C, A, B, M, N, K, lda, ldb, N, transA, transB, accumulate, scratch, i0, i1, j0, j1);
  }
}
