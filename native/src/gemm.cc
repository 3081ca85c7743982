// Packed, register-blocked GEMM (BLIS loop order: NC columns of B, KC depth, MC rows of A, then NR x MR
// micro-tiles). Micro-kernels, chosen once at load by the ISA level (the CPU's best, or LORA_ISA):
//   avx512: 12x32 f32 FMA tile (24 zmm accumulators)     avx2: 6x16 (12 ymm), and 12x8 for N <= 8
//   neon (arm64): 8x12 f32 tile of by-element FMAs (24 q-register accumulators), NEON packing
//   generic: 4x16 plain C++ the compiler vectorizes (SSE2 / NEON): the portable path, and the oracle
//            the fast kernels are checked against beside ref (LORA_ISA=generic runs it on any CPU)
//   avx512_bf16: 12x32 tile of vdpbf16ps on k-pairs: the bf16-weight path, twice the f32 FLOP rate
// A bf16 weight without avx512_bf16 takes the f32 kernels on bf16-rounded values: the same products.
//
// The AVX2 path (Zen 3 / Haswell class), after BLIS's haswell and zen3 configurations (6x16 sgemm
// micro-kernel, MC 144 / KC 256 / NC 4080, row-major C) and OpenBLAS's Haswell sgemm (which Zen also
// runs; its kernels too are FMA-bound tiles fed by broadcasts, with A and B packed per call):
//   - tile 6x16: 12 accumulators + 2 B vectors + 1 broadcast = 15 of 16 ymm; 12 FMAs per 8 loads per k,
//     so the 2 FMA pipes, not the 3 load ports, set the pace (see k_avx2_t); its loop is inline asm.
//   - blocks from the caches (see KC_AVX2): B micro-panel in L1, A block in L2, B block in L3.
//   - packing: B is packed once per (NC, KC) block and reused by every row block; a transposed B is
//     transposed 8x8 in registers, a row-major one copied row by row (sequential reads), a 16-bit one
//     widened on the way (shift / F16C); A is packed per MC x KC block, 6 rows transposed at a time.
//     Skinny products skip packing the operand reused least (UA_COLS, UB_ROWS).
//   - prefetch: the C tile at the start of each micro-kernel call, the A panel a few k ahead; B streams
//     sequentially and is left to the hardware prefetcher (a software prefetch of the next transposed B
//     panel measured no gain).
//   - edges: partial tiles run the full kernel into a small buffer (zero-padded panels), copied out.
//   - transposes are only strides, resolved while packing (NN, NT, TN, TT all take the same kernel).
//   - threads (gemm()): each thread gets whole micro-tile columns (or rows) and packs its own B (or A)
//     slice; sums over k are never split, and every thread blocks k the same way (KC depends on nothing
//     but the ISA), so any thread count gives the same bits.
#include "gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#elif defined(__aarch64__)
#include <arm_neon.h>
#endif

#include <cstdint>
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "half.h"
#include "pool.h"
#include "simd.h"

namespace lora {
namespace {

constexpr int KC2 = 384;  // bf16 path (AVX512_BF16): a 32-wide B micro-panel of KC2 bf16 is 24 KB, in L1

float f16_table[65536];  // f16 bits -> f32, filled by pick(), before any kernel runs

// element (k, j) of op(B) as f32 (exact decode)
inline float b_at(const void* B, int bt, long idx) {
  if (bt == B_F32) return ((const float*)B)[idx];
  uint16_t h = ((const uint16_t*)B)[idx];
  return bt == B_BF16 ? bf16_to_f32(h) : f16_table[h];
}

// ---- micro-kernels: C tile (MR x NR, row stride ldc) (+)= Ap [k][MR] . Bp [k][NR] --------------------

using KernelF32 = void (*)(int kc, const float* Ap, const float* Bp, float* C, long ldc, bool load);
using KernelBF16 = void (*)(int kp, const uint32_t* Ap, const uint32_t* Bp, float* C, long ldc, bool load);

#if defined(__x86_64__)
__attribute__((target("avx512f"))) void k_avx512(int kc, const float* Ap, const float* Bp, float* C, long ldc,
                                                 bool load) {
  __m512 c[12][2];
  for (int i = 0; i < 12; i++) {
    c[i][0] = load ? _mm512_loadu_ps(C + i * ldc) : _mm512_setzero_ps();
    c[i][1] = load ? _mm512_loadu_ps(C + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int k = 0; k < kc; k++) {
    __m512 b0 = _mm512_loadu_ps(Bp + k * 32), b1 = _mm512_loadu_ps(Bp + k * 32 + 16);
    const float* a = Ap + k * 12;
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) {
      __m512 ai = _mm512_set1_ps(a[i]);
      c[i][0] = _mm512_fmadd_ps(ai, b0, c[i][0]);
      c[i][1] = _mm512_fmadd_ps(ai, b1, c[i][1]);
    }
  }
  for (int i = 0; i < 12; i++) {
    _mm512_storeu_ps(C + i * ldc, c[i][0]);
    _mm512_storeu_ps(C + i * ldc + 16, c[i][1]);
  }
}

__attribute__((target("avx512f,avx512bf16"))) void k_avx512_bf16(int kp, const uint32_t* Ap, const uint32_t* Bp,
                                                                 float* C, long ldc, bool load) {
  __m512 c[12][2];
  for (int i = 0; i < 12; i++) {
    c[i][0] = load ? _mm512_loadu_ps(C + i * ldc) : _mm512_setzero_ps();
    c[i][1] = load ? _mm512_loadu_ps(C + i * ldc + 16) : _mm512_setzero_ps();
  }
  for (int k = 0; k < kp; k++) {
    __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp + k * 32);
    __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + k * 32 + 16);
    const uint32_t* a = Ap + k * 12;
#pragma GCC unroll 12
    for (int i = 0; i < 12; i++) {
      __m512bh ai = (__m512bh)_mm512_set1_epi32((int)a[i]);
      c[i][0] = _mm512_dpbf16_ps(c[i][0], ai, b0);
      c[i][1] = _mm512_dpbf16_ps(c[i][1], ai, b1);
    }
  }
  for (int i = 0; i < 12; i++) {
    _mm512_storeu_ps(C + i * ldc, c[i][0]);
    _mm512_storeu_ps(C + i * ldc + 16, c[i][1]);
  }
}

// AVX2 + FMA (Haswell, Zen 1-3): a 6x16 tile, as BLIS's haswell/zen3 sgemm and OpenBLAS's Haswell kernels
// use. 12 ymm accumulators (6 rows x 2 vectors of 8 columns), 2 ymm of B and 1 broadcast of A: 15 of the 16
// ymm registers. Per k: 2 B loads + 6 broadcasts (loads) feed 12 FMAs, i.e. 6 cycles of the 2 FMA pipes
// and 8 loads (Zen 3 issues 3 per cycle), so the kernel is FMA-bound, which is the point; 12 independent
// accumulators cover the FMA latency (4-5 cycles x 2 pipes = 8-10 in flight). Written with named
// accumulators: the earlier c[6][2] array version made GCC store every accumulator to the stack on every
// k (12 stores per 12 FMAs), which capped it near a third of peak.
// Operand access is by strides, so the same kernel reads packed panels or, for skinny products where
// packing costs more than it saves, the operands where they lie:
//   A(i, k) = A[i * ars + k * acs]   (packed panel: ars = 1, acs = 6)
//   B(k, j) = B[k * bks + j]         (packed panel: bks = 16; unpacked: a row-major B, bks = its row stride)
// PA / PB fix the packed strides at compile time (tighter addressing in the hot loop).
#define LORA_AVX2_ROW(u, i, r0, r1)                                    \
  {                                                                    \
    const __m256 ai = _mm256_broadcast_ss(a + (u) * acs + (i) * ars); \
    r0 = _mm256_fmadd_ps(ai, b0, r0);                                  \
    r1 = _mm256_fmadd_ps(ai, b1, r1);                                  \
  }
#define LORA_AVX2_STEP(u)                                    \
  {                                                          \
    const __m256 b0 = _mm256_loadu_ps(b + (u) * bks);        \
    const __m256 b1 = _mm256_loadu_ps(b + (u) * bks + 8);    \
    LORA_AVX2_ROW(u, 0, c00, c01)                            \
    LORA_AVX2_ROW(u, 1, c10, c11)                            \
    LORA_AVX2_ROW(u, 2, c20, c21)                            \
    LORA_AVX2_ROW(u, 3, c30, c31)                            \
    LORA_AVX2_ROW(u, 4, c40, c41)                            \
    LORA_AVX2_ROW(u, 5, c50, c51)                            \
  }

template <bool PA, bool PB>
__attribute__((target("avx2,fma"), always_inline)) inline void k_avx2_t(int kc, const float* A, long ars, long acs,
                                                                        const float* B, long bks, float* C,
                                                                        long ldc, bool load) {
  if (PA) ars = 1, acs = 6;
  if (PB) bks = 16;
  // the C tile is read (or written) after the loop: fetch its 6 rows (2 lines each when not aligned) now,
  // so those misses overlap the FMAs instead of stalling the stores
  for (int i = 0; i < 6; i++) {
    _mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char*)(C + i * ldc + 15), _MM_HINT_T0);
  }
  __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
  if (load) {
    c00 = _mm256_loadu_ps(C), c01 = _mm256_loadu_ps(C + 8);
    c10 = _mm256_loadu_ps(C + ldc), c11 = _mm256_loadu_ps(C + ldc + 8);
    c20 = _mm256_loadu_ps(C + 2 * ldc), c21 = _mm256_loadu_ps(C + 2 * ldc + 8);
    c30 = _mm256_loadu_ps(C + 3 * ldc), c31 = _mm256_loadu_ps(C + 3 * ldc + 8);
    c40 = _mm256_loadu_ps(C + 4 * ldc), c41 = _mm256_loadu_ps(C + 4 * ldc + 8);
    c50 = _mm256_loadu_ps(C + 5 * ldc), c51 = _mm256_loadu_ps(C + 5 * ldc + 8);
  } else {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
  }
  const float* a = A;
  const float* b = B;
  int k = 0;
  // The main loop is inline assembly: with intrinsics GCC's allocator spilled two values per 4 k (it
  // hoists the next step's B loads, then needs a 17th register). Here ymm0/ymm1 hold B, ymm2/ymm3 take
  // turns as the broadcast of A (register renaming overlaps consecutive steps), the 12 accumulators stay
  // in the other 12 registers. Unrolled by 4: the loop overhead drops to 3 ops per 48 FMAs.
  long n4 = kc / 4;
  if (n4 > 0) {
    if (PA && PB) {
      // packed panels: every address is an immediate offset; the A panel streams from L2 (the MC x KC
      // block lives there), so it is fetched 512 bytes (~21 k) ahead
#define LORA_AVX2_ROWS(ao)                                        \
  "vbroadcastss " #ao "+0(%[a]), %%ymm2\n\t"                       \
  "vfmadd231ps %%ymm0, %%ymm2, %[c00]\n\t"                         \
  "vfmadd231ps %%ymm1, %%ymm2, %[c01]\n\t"                         \
  "vbroadcastss " #ao "+4(%[a]), %%ymm3\n\t"                       \
  "vfmadd231ps %%ymm0, %%ymm3, %[c10]\n\t"                         \
  "vfmadd231ps %%ymm1, %%ymm3, %[c11]\n\t"                         \
  "vbroadcastss " #ao "+8(%[a]), %%ymm2\n\t"                       \
  "vfmadd231ps %%ymm0, %%ymm2, %[c20]\n\t"                         \
  "vfmadd231ps %%ymm1, %%ymm2, %[c21]\n\t"                         \
  "vbroadcastss " #ao "+12(%[a]), %%ymm3\n\t"                      \
  "vfmadd231ps %%ymm0, %%ymm3, %[c30]\n\t"                         \
  "vfmadd231ps %%ymm1, %%ymm3, %[c31]\n\t"                         \
  "vbroadcastss " #ao "+16(%[a]), %%ymm2\n\t"                      \
  "vfmadd231ps %%ymm0, %%ymm2, %[c40]\n\t"                         \
  "vfmadd231ps %%ymm1, %%ymm2, %[c41]\n\t"                         \
  "vbroadcastss " #ao "+20(%[a]), %%ymm3\n\t"                      \
  "vfmadd231ps %%ymm0, %%ymm3, %[c50]\n\t"                         \
  "vfmadd231ps %%ymm1, %%ymm3, %[c51]\n\t"
#define LORA_AVX2_PSTEP(bo, ao)                 \
  "vmovups " #bo "(%[b]), %%ymm0\n\t"           \
  "vmovups " #bo "+32(%[b]), %%ymm1\n\t" LORA_AVX2_ROWS(ao)
      __asm__ volatile(
          "1:\n\t"
          "prefetcht0 512(%[a])\n\t"
          LORA_AVX2_PSTEP(0, 0) LORA_AVX2_PSTEP(64, 24) LORA_AVX2_PSTEP(128, 48) LORA_AVX2_PSTEP(192, 72)
          "add $96, %[a]\n\t"
          "add $256, %[b]\n\t"
          "dec %[n]\n\t"
          "jnz 1b\n\t"
          : [a] "+r"(a), [b] "+r"(b), [n] "+r"(n4), [c00] "+x"(c00), [c01] "+x"(c01), [c10] "+x"(c10),
            [c11] "+x"(c11), [c20] "+x"(c20), [c21] "+x"(c21), [c30] "+x"(c30), [c31] "+x"(c31), [c40] "+x"(c40),
            [c41] "+x"(c41), [c50] "+x"(c50), [c51] "+x"(c51)
          :
          : "xmm0", "xmm1", "xmm2", "xmm3", "memory", "cc");
#undef LORA_AVX2_PSTEP
#undef LORA_AVX2_ROWS
    } else {
      // operands in place (skinny products): the same steps in intrinsics (an asm version with runtime
      // strides would need more than GCC's 30 asm operands)
      for (; k + 4 <= kc; k += 4) {
        LORA_AVX2_STEP(0)
        LORA_AVX2_STEP(1)
        LORA_AVX2_STEP(2)
        LORA_AVX2_STEP(3)
        a += 4 * acs;
        b += 4 * bks;
      }
    }
    k = kc / 4 * 4;
  }
  for (; k < kc; k++) {
    LORA_AVX2_STEP(0)
    a += acs;
    b += bks;
  }
  _mm256_storeu_ps(C, c00), _mm256_storeu_ps(C + 8, c01);
  _mm256_storeu_ps(C + ldc, c10), _mm256_storeu_ps(C + ldc + 8, c11);
  _mm256_storeu_ps(C + 2 * ldc, c20), _mm256_storeu_ps(C + 2 * ldc + 8, c21);
  _mm256_storeu_ps(C + 3 * ldc, c30), _mm256_storeu_ps(C + 3 * ldc + 8, c31);
  _mm256_storeu_ps(C + 4 * ldc, c40), _mm256_storeu_ps(C + 4 * ldc + 8, c41);
  _mm256_storeu_ps(C + 5 * ldc, c50), _mm256_storeu_ps(C + 5 * ldc + 8, c51);
}
#undef LORA_AVX2_STEP
#undef LORA_AVX2_ROW

// 12 x 8 for products with N <= 8 (LoRA's rank-8 side: x A^T, dY B, dB's inner products): the 6 x 16 tile
// would spend half its FMAs on zero columns. 12 accumulators of one vector each, 1 B load and 12
// broadcasts per k (13 loads per 12 FMAs: still FMA-bound on Zen 3's 3 load ports). A is read in place
// (A(i, k) = A[i * ars + k * acs]), B from a packed panel with row stride bks.
#define LORA_N8_ROW(p, off, c) c = _mm256_fmadd_ps(_mm256_broadcast_ss(p + off), b0, c);
__attribute__((target("avx2,fma"))) void k_avx2_n8(int kc, const float* A, long ars, long acs, const float* Bp,
                                                   long bks, float* C, long ldc, bool load) {
  __m256 c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
  if (load) {
    c0 = _mm256_loadu_ps(C), c1 = _mm256_loadu_ps(C + ldc), c2 = _mm256_loadu_ps(C + 2 * ldc);
    c3 = _mm256_loadu_ps(C + 3 * ldc), c4 = _mm256_loadu_ps(C + 4 * ldc), c5 = _mm256_loadu_ps(C + 5 * ldc);
    c6 = _mm256_loadu_ps(C + 6 * ldc), c7 = _mm256_loadu_ps(C + 7 * ldc), c8 = _mm256_loadu_ps(C + 8 * ldc);
    c9 = _mm256_loadu_ps(C + 9 * ldc), c10 = _mm256_loadu_ps(C + 10 * ldc), c11 = _mm256_loadu_ps(C + 11 * ldc);
  } else {
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = _mm256_setzero_ps();
  }
  const float *a0 = A, *a4 = A + 4 * ars, *a8 = A + 8 * ars;
  const long r2 = 2 * ars, r3 = 3 * ars;
  for (int k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_loadu_ps(Bp + (long)k * bks);
    LORA_N8_ROW(a0, 0, c0) LORA_N8_ROW(a0, ars, c1) LORA_N8_ROW(a0, r2, c2) LORA_N8_ROW(a0, r3, c3)
    LORA_N8_ROW(a4, 0, c4) LORA_N8_ROW(a4, ars, c5) LORA_N8_ROW(a4, r2, c6) LORA_N8_ROW(a4, r3, c7)
    LORA_N8_ROW(a8, 0, c8) LORA_N8_ROW(a8, ars, c9) LORA_N8_ROW(a8, r2, c10) LORA_N8_ROW(a8, r3, c11)
    a0 += acs, a4 += acs, a8 += acs;
  }
  _mm256_storeu_ps(C, c0), _mm256_storeu_ps(C + ldc, c1), _mm256_storeu_ps(C + 2 * ldc, c2);
  _mm256_storeu_ps(C + 3 * ldc, c3), _mm256_storeu_ps(C + 4 * ldc, c4), _mm256_storeu_ps(C + 5 * ldc, c5);
  _mm256_storeu_ps(C + 6 * ldc, c6), _mm256_storeu_ps(C + 7 * ldc, c7), _mm256_storeu_ps(C + 8 * ldc, c8);
  _mm256_storeu_ps(C + 9 * ldc, c9), _mm256_storeu_ps(C + 10 * ldc, c10), _mm256_storeu_ps(C + 11 * ldc, c11);
}
#undef LORA_N8_ROW

// 4 x 16 for products of 4 or 8 rows (LoRA's dB = dY^T (x A^T) at rank 8): the 6-row tile would run 12
// rows for 8. 8 accumulators cover the FMA latency exactly (4 cycles x 2 pipes); 2 B loads + 4
// broadcasts per 8 FMAs. Both operands in place: A(i, k) = A[i * ars + k * acs], B(k, j) = B[k * bks + j].
#define LORA_M4_ROW(i, r0, r1)                                              \
  {                                                                         \
    const __m256 ai = _mm256_broadcast_ss(a + (i) * ars);                  \
    r0 = _mm256_fmadd_ps(ai, b0, r0);                                       \
    r1 = _mm256_fmadd_ps(ai, b1, r1);                                       \
  }
__attribute__((target("avx2,fma"))) void k_avx2_m4(int kc, const float* A, long ars, long acs, const float* B,
                                                   long bks, float* C, long ldc, bool load) {
  __m256 c00, c01, c10, c11, c20, c21, c30, c31;
  if (load) {
    c00 = _mm256_loadu_ps(C), c01 = _mm256_loadu_ps(C + 8);
    c10 = _mm256_loadu_ps(C + ldc), c11 = _mm256_loadu_ps(C + ldc + 8);
    c20 = _mm256_loadu_ps(C + 2 * ldc), c21 = _mm256_loadu_ps(C + 2 * ldc + 8);
    c30 = _mm256_loadu_ps(C + 3 * ldc), c31 = _mm256_loadu_ps(C + 3 * ldc + 8);
  } else {
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = _mm256_setzero_ps();
  }
  const float* a = A;
  const float* b = B;
  for (int k = 0; k < kc; k++) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    LORA_M4_ROW(0, c00, c01) LORA_M4_ROW(1, c10, c11) LORA_M4_ROW(2, c20, c21) LORA_M4_ROW(3, c30, c31)
    a += acs;
    b += bks;
  }
  _mm256_storeu_ps(C, c00), _mm256_storeu_ps(C + 8, c01);
  _mm256_storeu_ps(C + ldc, c10), _mm256_storeu_ps(C + ldc + 8, c11);
  _mm256_storeu_ps(C + 2 * ldc, c20), _mm256_storeu_ps(C + 2 * ldc + 8, c21);
  _mm256_storeu_ps(C + 3 * ldc, c30), _mm256_storeu_ps(C + 3 * ldc + 8, c31);
}
#undef LORA_M4_ROW

__attribute__((target("avx2,fma"))) void k_avx2(int kc, const float* Ap, const float* Bp, float* C, long ldc,
                                                bool load) {
  k_avx2_t<true, true>(kc, Ap, 1, 6, Bp, 16, C, ldc, load);
}
// A read in place (rows of a skinny product), B packed
__attribute__((target("avx2,fma"))) void k_avx2_ua(int kc, const float* A, long ars, long acs, const float* Bp,
                                                   long, float* C, long ldc, bool load) {
  k_avx2_t<false, true>(kc, A, ars, acs, Bp, 16, C, ldc, load);
}
// A packed, B read in place (a row-major B under few rows of A)
__attribute__((target("avx2,fma"))) void k_avx2_ub(int kc, const float* Ap, long, long, const float* B, long bks,
                                                   float* C, long ldc, bool load) {
  k_avx2_t<true, false>(kc, Ap, 1, 6, B, bks, C, ldc, load);
}

#endif  // __x86_64__

#if defined(__aarch64__)
// ARM64 NEON (every ARMv8-A core: Apple M-series, Graviton, Cortex-A7x / Neoverse): an 8 x 12 tile.
// Register budget: 32 q registers of 4 floats. BLIS's armv8a sgemm micro-kernel is 8 x 12 too (MR 8,
// NR 12, for its column-major C: 24 accumulators of 4 rows, 2 vectors of A, 3 of B); OpenBLAS's
// Cortex-A57 / Neoverse sgemm runs 16 x 4 (16 accumulators). Our C is row-major, so the roles turn round:
// the accumulators hold rows of C, 3 vectors (12 columns) for each of 8 rows = 24 registers; per k, 3
// vector loads of the B panel and 2 of the A panel (8 rows) = 29 registers, 3 to spare. Where AVX2 has to
// broadcast each A value from memory, NEON's by-element FMA (fmla v.4s, v.4s, v.s[lane], i.e.
// vfmaq_laneq_f32) takes the row's A value straight out of a lane of the A vectors: per k 5 loads feed 24
// FMAs, so the FMA pipes (2 on Cortex-A76 / Neoverse N1, 4 on Apple Firestorm and Neoverse V1) set the
// pace, not the 2-3 load ports; 24 independent accumulators cover the 4-cycle FMA latency x 4 pipes
// (16 in flight) with room. Named accumulators, as in the AVX2 kernel: an array invites spills.
// Correctness is checked under qemu (native/test/gemm_check.cc); its speed was never measured on real
// arm64 hardware, so the blocks below follow the caches' sizes, not a tuning run.
#define LORA_NEON_ROW(c0, c1, c2, av, lane)    \
  c0 = vfmaq_laneq_f32(c0, b0, av, lane);      \
  c1 = vfmaq_laneq_f32(c1, b1, av, lane);      \
  c2 = vfmaq_laneq_f32(c2, b2, av, lane);
#define LORA_NEON_LOAD_ROW(c0, c1, c2, i)                                                   \
  c0 = load ? vld1q_f32(C + (i) * ldc) : vdupq_n_f32(0.0f);                                 \
  c1 = load ? vld1q_f32(C + (i) * ldc + 4) : vdupq_n_f32(0.0f);                             \
  c2 = load ? vld1q_f32(C + (i) * ldc + 8) : vdupq_n_f32(0.0f);
#define LORA_NEON_STORE_ROW(c0, c1, c2, i) \
  vst1q_f32(C + (i) * ldc, c0);            \
  vst1q_f32(C + (i) * ldc + 4, c1);        \
  vst1q_f32(C + (i) * ldc + 8, c2);
void k_neon(int kc, const float* Ap, const float* Bp, float* C, long ldc, bool load) {
  float32x4_t c00, c01, c02, c10, c11, c12, c20, c21, c22, c30, c31, c32;
  float32x4_t c40, c41, c42, c50, c51, c52, c60, c61, c62, c70, c71, c72;
  LORA_NEON_LOAD_ROW(c00, c01, c02, 0) LORA_NEON_LOAD_ROW(c10, c11, c12, 1)
  LORA_NEON_LOAD_ROW(c20, c21, c22, 2) LORA_NEON_LOAD_ROW(c30, c31, c32, 3)
  LORA_NEON_LOAD_ROW(c40, c41, c42, 4) LORA_NEON_LOAD_ROW(c50, c51, c52, 5)
  LORA_NEON_LOAD_ROW(c60, c61, c62, 6) LORA_NEON_LOAD_ROW(c70, c71, c72, 7)
  // the C tile is read or written after the loop: ask for its rows now (3 lines each when unaligned)
  for (int i = 0; i < 8; i++) {
    __builtin_prefetch(C + i * ldc, 1, 3);
    __builtin_prefetch(C + i * ldc + 11, 1, 3);
  }
  for (int k = 0; k < kc; k++) {
    const float* a = Ap + k * 8;
    const float* b = Bp + k * 12;
    // the A panel streams from L2 (the MC x KC block lives there): fetch it ~16 k (512 bytes) ahead
    __builtin_prefetch(a + 128, 0, 3);
    const float32x4_t a0 = vld1q_f32(a), a1 = vld1q_f32(a + 4);
    const float32x4_t b0 = vld1q_f32(b), b1 = vld1q_f32(b + 4), b2 = vld1q_f32(b + 8);
    LORA_NEON_ROW(c00, c01, c02, a0, 0) LORA_NEON_ROW(c10, c11, c12, a0, 1)
    LORA_NEON_ROW(c20, c21, c22, a0, 2) LORA_NEON_ROW(c30, c31, c32, a0, 3)
    LORA_NEON_ROW(c40, c41, c42, a1, 0) LORA_NEON_ROW(c50, c51, c52, a1, 1)
    LORA_NEON_ROW(c60, c61, c62, a1, 2) LORA_NEON_ROW(c70, c71, c72, a1, 3)
  }
  LORA_NEON_STORE_ROW(c00, c01, c02, 0) LORA_NEON_STORE_ROW(c10, c11, c12, 1)
  LORA_NEON_STORE_ROW(c20, c21, c22, 2) LORA_NEON_STORE_ROW(c30, c31, c32, 3)
  LORA_NEON_STORE_ROW(c40, c41, c42, 4) LORA_NEON_STORE_ROW(c50, c51, c52, 5)
  LORA_NEON_STORE_ROW(c60, c61, c62, 6) LORA_NEON_STORE_ROW(c70, c71, c72, 7)
}
#undef LORA_NEON_STORE_ROW
#undef LORA_NEON_LOAD_ROW
#undef LORA_NEON_ROW
#endif  // __aarch64__

// Portable C++: the compiler vectorizes it (NEON on arm64, SSE2 on any x86-64).
void k_generic(int kc, const float* Ap, const float* Bp, float* C, long ldc, bool load) {
  float c[4][16];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 16; j++) c[i][j] = load ? C[i * ldc + j] : 0.0f;
  for (int k = 0; k < kc; k++)
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 16; j++) c[i][j] += Ap[k * 4 + i] * Bp[k * 16 + j];
  for (int i = 0; i < 4; i++)
    for (int j = 0; j < 16; j++) C[i * ldc + j] = c[i][j];
}

// the f32 kernel with A or B read in place (see k_avx2_t): A(i, k) = A[i*ars + k*acs], B(k, j) = B[k*bks + j]
using KernelF32S = void (*)(int kc, const float* A, long ars, long acs, const float* B, long bks, float* C, long ldc,
                            bool load);

struct Isa {
  const char* name;
  int MR, NR;
  // cache blocks of the f32 path: KC deep, MC rows of A (a multiple of MR), NC columns of B (of NR)
  int KC, MC, NC;
  KernelF32 f32;
  KernelBF16 bf16;     // null: bf16 weights go through the f32 kernel on rounded values
  KernelF32S ua, ub;   // null: both operands are always packed
  KernelF32S n8;       // 12 x 8 tile, A in place, for N <= 8 (null: none)
  KernelF32S m4;       // 4 x 16 tile, A and B in place, for M = 4 or 8 (null: none)
  bool vpack;          // packing may use this ISA's vector routines (AVX2 on x86-64, NEON on arm64)
};

// Blocks for the AVX-512 and portable kernels (tuned on Zen 4): a 32-wide B micro-panel of 192 floats is
// 24 KB, in L1; 96 rows of A x 192 = 72 KB in L2; 1536 columns x 192 = 1.1 MB in L2/L3.
constexpr int KC_512 = 192, MC_512 = 96, NC_512 = 1536;
// Blocks for AVX2 on Zen 3 (32 KB L1d, 512 KB L2 per core, 32 MB L3 shared), as BLIS's zen3 configuration
// reasons (its sgemm blocks are MC 144, KC 256, NC 4080 for this 6x16 tile):
//   KC 256: the 16 x 256 B micro-panel is 16 KB and the 6 x 256 A micro-panel 6 KB: both stay in the L1
//           with room for the C tile's lines. Deeper KC also halves how often the C tile is reloaded and
//           stored per product (K / KC times); 384 would no longer fit the L1 beside the A panel.
//   MC 144: the 144 x 256 A block is 144 KB, a quarter of the L2: the B micro-panel streaming in from L3
//           and the next A block do not evict it. Each B micro-panel loaded into L1 serves 24 tiles.
//   NC 4080: the 256 x 4080 packed B block is 4 MB, in L3; every N of the GPT-2 and Llama steps but the
//           vocabulary is <= NC, so B is packed once per product (and A once per KC block).
#ifndef LORA_AVX2_BLOCKS  // -DLORA_AVX2_BLOCKS=kc,mc,nc to try others (native/bench/gemm_bench.cc)
#define LORA_AVX2_BLOCKS 256, 144, 4080
#endif
constexpr int AVX2_BLOCKS[3] = {LORA_AVX2_BLOCKS};
constexpr int KC_AVX2 = AVX2_BLOCKS[0], MC_AVX2 = AVX2_BLOCKS[1], NC_AVX2 = AVX2_BLOCKS[2];

// Blocks for NEON's 8 x 12 tile, from the caches of the cores it targets (never tuned on real hardware:
// there is no arm64 machine here). Neoverse N1 / Graviton 2: 64 KB L1d, 1 MB L2 per core; Apple M1
// Firestorm: 128 KB L1d, 12 MB L2 per cluster. BLIS's Cortex-A57 configuration (32 KB L1) blocks its
// 8 x 12 sgemm at MC 120, KC 640, NC 3072.
//   KC 256: the 12 x 256 B micro-panel is 12 KB and the 8 x 256 A micro-panel 8 KB, in the smallest of
//           those L1s with room for the C tile; KC depends on nothing else, so thread counts agree.
//   MC 128: the 128 x 256 A block is 128 KB, an eighth of N1's L2 (a multiple of MR 8).
//   NC 3072: the 256 x 3072 packed B block is 3 MB (N1's system cache, M1's L2); a multiple of NR 12, and
//           every N of the GPT-2 and Llama steps but the vocabulary fits in one block.
constexpr int KC_NEON = 256, MC_NEON = 128, NC_NEON = 3072;

// ISA levels, lowest first; LORA_ISA names one to force it (any the CPU supports). Each architecture has
// its own list: generic is the portable kernel everywhere (the oracle the vector kernels are checked
// against), NEON is part of every ARMv8-A core, so an arm64 CPU always runs neon.
#if defined(__aarch64__)
enum Level { L_GENERIC = 0, L_NEON, L_COUNT };
const char* const LEVEL_NAMES[L_COUNT] = {"generic", "neon"};
#else
enum Level { L_GENERIC = 0, L_AVX2, L_AVX512, L_AVX512BF16, L_COUNT };
const char* const LEVEL_NAMES[L_COUNT] = {"generic", "avx2", "avx512", "avx512bf16"};
#endif

int cpu_level() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return __builtin_cpu_supports("avx512bf16") ? L_AVX512BF16 : L_AVX512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return L_AVX2;
#elif defined(__aarch64__)
  return L_NEON;
#endif
  return L_GENERIC;
}

Isa isa_for(int level) {
#if defined(__x86_64__)
  if (level >= L_AVX512) {
    bool bf = level == L_AVX512BF16;
    return {LEVEL_NAMES[level], 12, 32, KC_512, MC_512, NC_512, k_avx512, bf ? k_avx512_bf16 : nullptr,
            nullptr, nullptr, nullptr, nullptr, true};
  }
  if (level == L_AVX2) return {"avx2", 6, 16, KC_AVX2, MC_AVX2, NC_AVX2, k_avx2, nullptr, k_avx2_ua, k_avx2_ub, k_avx2_n8, k_avx2_m4,
            true};
#elif defined(__aarch64__)
  if (level == L_NEON)
    return {"neon", 8, 12, KC_NEON, MC_NEON, NC_NEON, k_neon, nullptr, nullptr, nullptr, nullptr, nullptr, true};
#endif
  (void)level;
  return {"generic", 4, 16, KC_512, MC_512, NC_512, k_generic, nullptr, nullptr, nullptr, nullptr, nullptr, false};
}

struct Choice {
  int level, cpu;
  bool forced;
  std::string error;  // LORA_ISA names a level this CPU lacks (or none): the addon refuses to load
};

// "avx2 or generic": the levels this CPU runs, best first
std::string supported_list(int cpu) {
  std::string s;
  for (int l = cpu; l >= 0; l--) s += std::string(l == cpu ? "" : l == 0 ? " or " : ", ") + LEVEL_NAMES[l];
  return s;
}

Choice choose() {
  const int cpu = cpu_level();
  const char* env = std::getenv("LORA_ISA");
  if (!env || !*env) return {cpu, cpu, false, ""};
  for (int l = 0; l < L_COUNT; l++) {
    if (std::strcmp(env, LEVEL_NAMES[l]) != 0) continue;
    if (l <= cpu) return {l, cpu, true, ""};
    return {cpu, cpu, false,
            std::string("LORA_ISA=") + env + ": this CPU has " + LEVEL_NAMES[cpu] + " only; use " +
                supported_list(cpu)};
  }
  std::string all;  // every level of this architecture, best first
  for (int l = L_COUNT - 1; l >= 0; l--) all += std::string(l == L_COUNT - 1 ? "" : ", ") + LEVEL_NAMES[l];
  return {cpu, cpu, false,
          std::string("LORA_ISA=") + env + ": not a level (" + all + "); this CPU runs " + supported_list(cpu)};
}

const Choice& choice() {
  static Choice c = choose();
  return c;
}

Isa pick() {
  for (int h = 0; h < 65536; h++) f16_table[h] = f16_to_f32((uint16_t)h);
  return isa_for(choice().level);
}

const Isa& isa() {
  static Isa i = pick();
  return i;
}

// A growable buffer whose data is 64-byte aligned (packed panels start on a cache line)
template <class T>
struct Aligned {
  std::vector<T> v;
  T* get(size_t n) {
    if (v.size() < n + 64 / sizeof(T)) v.resize(n + 64 / sizeof(T));
    return (T*)(((uintptr_t)v.data() + 63) & ~(uintptr_t)63);
  }
};

struct Scratch {
  Aligned<float> a, b;
  std::vector<float> tile;
  Aligned<uint32_t> a2, b2;
};
thread_local Scratch scratch;

#if defined(__x86_64__)
// 8 x 8 transpose in registers: r[c] holds row c (8 floats); afterwards r[q] holds column q
__attribute__((target("avx2"), always_inline)) inline void transpose8(__m256 r[8]) {
  // pairs of rows interleaved, then quads, then the 128-bit halves swapped into place
  __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20), r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20), r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31), r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31), r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// 6 full rows of a row-major A (depth kc) into a [kc][6] panel, 8 k at a time through transpose8 (two
// zero rows). Each k's 8-float store runs 2 floats into the next k's slot, which the next store (or the
// next panel, or the buffer's slack) overwrites. Scalar, this strided pack cost ~5% of a K = 8192 product.
__attribute__((target("avx2"))) void pack_a6_rows_avx2(float* dst, const float* A, long rsA, int kc) {
  int k = 0;
  for (; k + 8 <= kc; k += 8) {
    __m256 r[8];
    for (int i = 0; i < 6; i++) r[i] = _mm256_loadu_ps(A + i * rsA + k);
    r[6] = r[7] = _mm256_setzero_ps();
    transpose8(r);
    for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (k + q) * 6, r[q]);
  }
  for (; k < kc; k++)
    for (int i = 0; i < 6; i++) dst[k * 6 + i] = A[i * rsA + k];
}
#endif

#if defined(__aarch64__)
// Packing for the NEON tile, the same moves as the AVX2 routines above with 4-float vectors.
// 4 x 4 transpose in registers: r[c] holds row c; afterwards r[q] holds column q (floats interleaved in
// pairs by trn1/trn2, then 64-bit halves the same way: 8 permutes per 16 floats)
inline void transpose4(float32x4_t r[4]) {
  const float32x4_t t0 = vtrn1q_f32(r[0], r[1]), t1 = vtrn2q_f32(r[0], r[1]);
  const float32x4_t t2 = vtrn1q_f32(r[2], r[3]), t3 = vtrn2q_f32(r[2], r[3]);
  auto d = [](float32x4_t v) { return vreinterpretq_f64_f32(v); };
  r[0] = vreinterpretq_f32_f64(vtrn1q_f64(d(t0), d(t2)));
  r[1] = vreinterpretq_f32_f64(vtrn1q_f64(d(t1), d(t3)));
  r[2] = vreinterpretq_f32_f64(vtrn2q_f64(d(t0), d(t2)));
  r[3] = vreinterpretq_f32_f64(vtrn2q_f64(d(t1), d(t3)));
}

// 8 full rows of a row-major A (depth kc) into a [kc][8] panel: 4 k of 4 rows at a time, transposed
void pack_a8_rows_neon(float* dst, const float* A, long rsA, int kc) {
  int k = 0;
  for (; k + 4 <= kc; k += 4)
    for (int h = 0; h < 8; h += 4) {
      float32x4_t r[4];
      for (int i = 0; i < 4; i++) r[i] = vld1q_f32(A + (h + i) * rsA + k);
      transpose4(r);
      for (int q = 0; q < 4; q++) vst1q_f32(dst + (k + q) * 8 + h, r[q]);
    }
  for (; k < kc; k++)
    for (int i = 0; i < 8; i++) dst[k * 8 + i] = A[i * rsA + k];
}

// A transposed f32 B (a weight [N, K]: column j of op(B) contiguous along k) into a [kc][NR] panel,
// 4 columns x 4 k at a time
void pack_b_cols_neon(float* dst, const float* B, long csB, int kc, int nr, int NR) {
  int jj = 0;
  for (; jj + 4 <= nr; jj += 4) {
    const float* s = B + (long)jj * csB;
    int k = 0;
    for (; k + 4 <= kc; k += 4) {
      float32x4_t r[4];
      for (int c = 0; c < 4; c++) r[c] = vld1q_f32(s + c * csB + k);
      transpose4(r);
      for (int q = 0; q < 4; q++) vst1q_f32(dst + (long)(k + q) * NR + jj, r[q]);
    }
    for (; k < kc; k++)
      for (int c = 0; c < 4; c++) dst[(long)k * NR + jj + c] = s[(long)c * csB + k];
  }
  for (; jj < nr; jj++)
    for (int k = 0; k < kc; k++) dst[(long)k * NR + jj] = B[(long)jj * csB + k];
}

// 4 16-bit weights widened to f32, exactly: bf16 by a widening shift into the top half (shll), f16 by
// the f16 -> f32 conversion every ARMv8-A core has (fcvtl)
inline float32x4_t widen4(const uint16_t* p, int bt) {
  const uint16x4_t h = vld1_u16(p);
  if (bt == B_BF16) return vreinterpretq_f32_u32(vshll_n_u16(h, 16));
  return vcvt_f32_f16(vreinterpret_f16_u16(h));
}

// A 16-bit B into an f32 [kc][NR] panel (see pack_b16_avx2): columns contiguous along k (rsB == 1,
// 4 x 4 blocks widened then transposed) or rows along j (csB == 1, widened 4 at a time)
void pack_b16_neon(float* dst, const uint16_t* B, int bt, long rsB, long csB, int kc, int nr, int NR) {
  auto one = [&](long i) { return bt == B_BF16 ? bf16_to_f32(B[i]) : f16_table[B[i]]; };
  if (rsB == 1) {
    int jj = 0;
    for (; jj + 4 <= nr; jj += 4) {
      const uint16_t* s = B + (long)jj * csB;
      int k = 0;
      for (; k + 4 <= kc; k += 4) {
        float32x4_t r[4];
        for (int c = 0; c < 4; c++) r[c] = widen4(s + c * csB + k, bt);
        transpose4(r);
        for (int q = 0; q < 4; q++) vst1q_f32(dst + (long)(k + q) * NR + jj, r[q]);
      }
      for (; k < kc; k++)
        for (int c = 0; c < 4; c++) dst[(long)k * NR + jj + c] = one((long)(jj + c) * csB + k);
    }
    for (; jj < nr; jj++)
      for (int k = 0; k < kc; k++) dst[(long)k * NR + jj] = one((long)jj * csB + k);
  } else {
    for (int k = 0; k < kc; k++) {
      const long row = (long)k * rsB;
      int jj = 0;
      for (; jj + 4 <= nr; jj += 4) vst1q_f32(dst + (long)k * NR + jj, widen4(B + row + jj, bt));
      for (; jj < nr; jj++) dst[(long)k * NR + jj] = one(row + jj);
    }
  }
}
#endif

// the tile height whose A panels have a vector packing routine (AVX2's 6 rows, NEON's 8)
#if defined(__aarch64__)
constexpr int VPACK_MR = 8;
#else
constexpr int VPACK_MR = 6;
#endif

// f32 path: pack A rows [i0, i0+mc) x depth [p0, p0+kc) into MR-row panels [kc][MR] (zero padded);
// round = true rounds each value to bf16 (a bf16 weight on a CPU without bf16 products)
void pack_a(float* dst, const float* A, long rsA, long csA, int i0, int mc, int p0, int kc, int MR, bool round,
            bool vpack) {
  for (int r = 0; r < mc; r += MR, dst += (long)kc * MR) {
    int mr = mc - r < MR ? mc - r : MR;
    if (mr < MR) std::memset(dst, 0, sizeof(float) * kc * MR);
    const float* base = A + (long)(i0 + r) * rsA + (long)p0 * csA;
    // read along whichever direction of A is contiguous
    if (csA == 1 && vpack && MR == VPACK_MR && mr == MR) {
#if defined(__x86_64__)
      pack_a6_rows_avx2(dst, base, rsA, kc);
#elif defined(__aarch64__)
      pack_a8_rows_neon(dst, base, rsA, kc);
#endif
    } else if (csA == 1) {
      for (int ii = 0; ii < mr; ii++)
        for (int k = 0; k < kc; k++) dst[k * MR + ii] = base[ii * rsA + k];
    } else {
      for (int k = 0; k < kc; k++)
        for (int ii = 0; ii < mr; ii++) dst[k * MR + ii] = base[ii * rsA + (long)k * csA];
    }
    if (round)
      for (int i = 0; i < kc * MR; i++) dst[i] = bf16_to_f32(f32_to_bf16(dst[i]));
  }
}

#if defined(__x86_64__)
// A transposed f32 B (a weight [N, K] read as [K, N]: column j of op(B) is contiguous along k) into a
// [kc][NR] panel, 8 columns x 8 k at a time through an 8 x 8 register transpose (8 loads, 24 shuffles,
// 8 stores per 64 floats, against 64 scalar loads and strided stores). On the NT products of a step
// (x @ W^T) this packing is a few % of the product; scalar it was over 10% at M = 256.
__attribute__((target("avx2"))) void pack_b_cols_avx2(float* dst, const float* B, long csB, int kc, int nr, int NR) {
  int jj = 0;
  for (; jj + 8 <= nr; jj += 8) {
    const float* s = B + (long)jj * csB;
    int k = 0;
    for (; k + 8 <= kc; k += 8) {
      __m256 r[8];
      for (int c = 0; c < 8; c++) r[c] = _mm256_loadu_ps(s + c * csB + k);
      transpose8(r);
      for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (long)(k + q) * NR + jj, r[q]);
    }
    for (; k < kc; k++)
      for (int c = 0; c < 8; c++) dst[(long)k * NR + jj + c] = s[(long)c * csB + k];
  }
  for (; jj < nr; jj++)
    for (int k = 0; k < kc; k++) dst[(long)k * NR + jj] = B[(long)jj * csB + k];
}
#endif

// A row-major f32 B, the whole KC x NC block at once, row by row: each row of B is read once,
// contiguously (the hardware prefetcher streams it from DRAM), and its 16-float pieces go to the panels.
// Panel by panel, the same block is 16 floats from each of 256 rows kilobytes apart: when B is a large
// weight (the 50257 x 768 head in dX = dY @ W) those reads were latency-bound and cost ~10%.
void pack_b_rows(float* dst, const float* B, long rsB, int p0, int kc, int j0, int nc, int NR, long ps) {
  const int nfull = nc / NR * NR;
  if (nfull < nc) std::memset(dst + (long)(nfull / NR) * ps, 0, sizeof(float) * kc * NR);
  for (int k = 0; k < kc; k++) {
    const float* row = B + (long)(p0 + k) * rsB + j0;
    float* d = dst + (long)k * NR;
    int c = 0;
    if (NR == 16)
      for (; c < nfull; c += 16) std::memcpy(d + (long)(c / 16) * ps, row + c, sizeof(float) * 16);
    for (; c < nfull; c += NR) std::memcpy(d + (long)(c / NR) * ps, row + c, sizeof(float) * NR);
    if (c < nc) std::memcpy(d + (long)(c / NR) * ps, row + c, sizeof(float) * (nc - c));
  }
}

#if defined(__x86_64__)
// 8 16-bit weights widened to f32, exactly: bf16 is the top half of an f32 (a shift), f16 goes through
// F16C's vcvtph2ps (every AVX2 CPU has F16C)
__attribute__((target("avx2,f16c"), always_inline)) inline __m256 widen8(const uint16_t* p, int bt) {
  const __m128i h = _mm_loadu_si128((const __m128i*)p);
  if (bt == B_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  return _mm256_cvtph_ps(h);
}

// A 16-bit B (a bf16 or f16 frozen weight) into an f32 [kc][NR] panel: half the bytes read of an f32
// weight, widened 8 at a time. B points at (k 0, column 0) of the panel; either its columns are
// contiguous along k (rsB == 1, a weight [N, K] read transposed: 8 x 8 blocks through transpose8) or its
// rows along j (csB == 1).
__attribute__((target("avx2,f16c"))) void pack_b16_avx2(float* dst, const uint16_t* B, int bt, long rsB, long csB,
                                                       int kc, int nr, int NR) {
  auto one = [&](long i) { return bt == B_BF16 ? bf16_to_f32(B[i]) : f16_table[B[i]]; };
  if (rsB == 1) {
    int jj = 0;
    for (; jj + 8 <= nr; jj += 8) {
      const uint16_t* s = B + (long)jj * csB;
      int k = 0;
      for (; k + 8 <= kc; k += 8) {
        __m256 r[8];
        for (int c = 0; c < 8; c++) r[c] = widen8(s + c * csB + k, bt);
        transpose8(r);
        for (int q = 0; q < 8; q++) _mm256_storeu_ps(dst + (long)(k + q) * NR + jj, r[q]);
      }
      for (; k < kc; k++)
        for (int c = 0; c < 8; c++) dst[(long)k * NR + jj + c] = one((long)(jj + c) * csB + k);
    }
    for (; jj < nr; jj++)
      for (int k = 0; k < kc; k++) dst[(long)k * NR + jj] = one((long)jj * csB + k);
  } else {
    for (int k = 0; k < kc; k++) {
      const long row = (long)k * rsB;
      int jj = 0;
      for (; jj + 8 <= nr; jj += 8) _mm256_storeu_ps(dst + (long)k * NR + jj, widen8(B + row + jj, bt));
      for (; jj < nr; jj++) dst[(long)k * NR + jj] = one(row + jj);
    }
  }
}
#endif

// pack op(B) depth [p0, p0+kc) x columns [j0, j0+nc) into NR-column panels [kc][NR] (zero padded)
void pack_b(float* dst, const void* B, int bt, long rsB, long csB, int p0, int kc, int j0, int nc, int NR,
            bool vpack, long ps) {
  for (int c = 0; c < nc; c += NR, dst += ps) {
    int nr = nc - c < NR ? nc - c : NR;
    if (nr < NR) std::memset(dst, 0, sizeof(float) * kc * NR);
    if (bt == B_F32 && csB == 1) {  // rows of B contiguous: copy NR floats per k
      const float* src = (const float*)B + (long)p0 * rsB + j0 + c;
      if (nr == 16)  // a fixed size: inlined as two vector copies, not a memcpy call per k
        for (int k = 0; k < kc; k++) std::memcpy(dst + k * 16, src + (long)k * rsB, sizeof(float) * 16);
      else
        for (int k = 0; k < kc; k++) std::memcpy(dst + k * NR, src + (long)k * rsB, sizeof(float) * nr);
#if defined(__x86_64__)
    } else if (bt == B_F32 && rsB == 1 && vpack) {
      pack_b_cols_avx2(dst, (const float*)B + (long)(j0 + c) * csB + p0, csB, kc, nr, NR);
    } else if (bt != B_F32 && vpack && (rsB == 1 || csB == 1)) {
      pack_b16_avx2(dst, (const uint16_t*)B + (long)(j0 + c) * csB + (long)p0 * rsB, bt, rsB, csB, kc, nr, NR);
#elif defined(__aarch64__)
    } else if (bt == B_F32 && rsB == 1 && vpack) {
      pack_b_cols_neon(dst, (const float*)B + (long)(j0 + c) * csB + p0, csB, kc, nr, NR);
    } else if (bt != B_F32 && vpack && (rsB == 1 || csB == 1)) {
      pack_b16_neon(dst, (const uint16_t*)B + (long)(j0 + c) * csB + (long)p0 * rsB, bt, rsB, csB, kc, nr, NR);
#endif
    } else {  // columns of B contiguous (a transposed weight): read along k, write strided into the panel
      for (int jj = 0; jj < nr; jj++) {
        long col = (long)(j0 + c + jj) * csB + (long)p0 * rsB;
        if (bt == B_F32) {
          const float* src = (const float*)B + col;
          for (int k = 0; k < kc; k++) dst[k * NR + jj] = src[(long)k * rsB];
        } else {
          for (int k = 0; k < kc; k++) dst[k * NR + jj] = b_at(B, bt, col + (long)k * rsB);
        }
      }
    }
  }
}

// bf16 path: k-pairs. A panel [kp][MR] of u32 (two bf16: k even low, k odd high); B panel [kp][NR] the same
void pack_a2(uint32_t* dst, const float* A, long rsA, long csA, int i0, int mc, int p0, int kc, int MR) {
  const int kp = (kc + 1) / 2;
  for (int r = 0; r < mc; r += MR, dst += (long)kp * MR) {
    int mr = mc - r < MR ? mc - r : MR;
    if (mr < MR) std::memset(dst, 0, sizeof(uint32_t) * kp * MR);
    for (int ii = 0; ii < mr; ii++) {  // one row of A at a time: contiguous reads when A is not transposed
      const float* row = A + (long)(i0 + r + ii) * rsA + (long)p0 * csA;
      for (int k = 0; k < kc / 2; k++)
        dst[k * MR + ii] = f32_to_bf16(row[2L * k * csA]) | (uint32_t)f32_to_bf16(row[(2L * k + 1) * csA]) << 16;
      if (kc & 1) dst[(kp - 1) * MR + ii] = f32_to_bf16(row[(long)(kc - 1) * csA]);
    }
  }
}

void pack_b2(uint32_t* dst, const uint16_t* B, long rsB, long csB, int p0, int kc, int j0, int nc, int NR) {
  const int kp = (kc + 1) / 2;
  for (int c = 0; c < nc; c += NR, dst += (long)kp * NR) {
    int nr = nc - c < NR ? nc - c : NR;
    if (nr < NR) std::memset(dst, 0, sizeof(uint32_t) * kp * NR);
    if (rsB == 1) {  // a transposed weight [N, K]: each column's k-pairs are adjacent, one u32 each
      for (int jj = 0; jj < nr; jj++) {
        const uint16_t* col = B + (long)(j0 + c + jj) * csB + p0;
        for (int k = 0; k < kc / 2; k++) {
          uint32_t pair;
          std::memcpy(&pair, col + 2 * k, 4);
          dst[k * NR + jj] = pair;
        }
        if (kc & 1) dst[(kp - 1) * NR + jj] = col[kc - 1];
      }
    } else {  // a weight [K, N] read as is: interleave rows 2k and 2k + 1
      for (int k = 0; k < kp; k++) {
        const uint16_t* r0 = B + (long)(p0 + 2 * k) * rsB + (long)(j0 + c) * csB;
        const uint16_t* r1 = 2 * k + 1 < kc ? r0 + rsB : nullptr;
        for (int jj = 0; jj < nr; jj++)
          dst[k * NR + jj] = r0[(long)jj * csB] | (r1 ? (uint32_t)r1[(long)jj * csB] << 16 : 0u);
      }
    }
  }
}

// ---- few rows (token-by-token generation): no packing, the weight streamed once -------------------------

// a (rounded to bf16 for a bf16 weight, as the packed path does) widened into f32
void load_row(float* dst, const float* a, long cs, int K, bool round) {
  for (int k = 0; k < K; k++) dst[k] = round ? bf16_to_f32(f32_to_bf16(a[(long)k * cs])) : a[(long)k * cs];
}

}  // namespace

// ---- products over few k (K <= DOTS_SMALL_K): outputs a vector at a time ---------------------------
// With K = r (a LoRA up-projection, ax [M, r] @ B^T, B [out, r]) a dot per output spends more on its
// horizontal sum than on its K products (measured 5 ns per output at K = 8 on Zen 3, about 15 cycles).
// Instead the weight is turned into panels of L outputs [K][L] (pack_small_k; L = small_k_lanes(), 16
// where the registers are 512 bits wide, else 8) and each row's outputs are summed over k in order, L
// lanes at a time: out_j = (((0 + x_0 w_j0) + x_1 w_j1) + ...), the same sequence of f32 operations for
// every output, so an output's bits depend only on its x row and weight row: never on M, on which
// outputs share its panel, on L, or on the thread split (invariantRows; gemv and lora_rows.cc both call
// them, so a batched LoRA row gets the bits of that row decoded alone).

int small_k_lanes() { return simd_level() >= 2 ? 16 : 8; }

long small_k_panel(int N, int K) {
  const int L = small_k_lanes();
  return (long)((N + L - 1) / L) * K * L;
}

// wt [ceil(N/L)][K][L] = W's rows j < N (row stride csB, K values each), zero past N
void pack_small_k(float* wt, const float* W, long csB, int K, int N) {
  const int L = small_k_lanes();
  for (int j0 = 0; j0 < N; j0 += L) {
    float* p = wt + (long)(j0 / L) * K * L;
    const int nj = N - j0 < L ? N - j0 : L;
    for (int jj = 0; jj < nj; jj++) {
      const float* wj = W + (long)(j0 + jj) * csB;
      for (int k = 0; k < K; k++) p[k * L + jj] = wj[k];
    }
    for (int jj = nj; jj < L; jj++)
      for (int k = 0; k < K; k++) p[k * L + jj] = 0.0f;
  }
}

// one panel's L outputs into c (a whole panel: one store; a loop there became a call to memcpy)
template <class V, int L>
__attribute__((always_inline)) inline void store_panel(float* c, V acc, int n, bool accumulate) {
  if (n >= L) {
    const V sum = accumulate ? loadu<V>(c) + acc : acc;
    storeu(c, sum);
  } else {
    for (int jj = 0; jj < n; jj++) c[jj] = accumulate ? c[jj] + acc[jj] : acc[jj];
  }
}

// c [M, N] (+)= x [M, K] (contiguous) @ W^T from pack_small_k's panels of L lanes (V holds L floats),
// output row i at crow(i). Four rows at a time share each panel load (four independent sums in flight; a
// row at a time was latency-bound on its one accumulator); each output's operations are the same
// whichever rows share its pass.
template <class V, int L, class CRow>
__attribute__((always_inline)) inline void small_k_lanes_rows(int M, int K, const float* x, const float* wt, int N,
                                                             CRow crow, bool accumulate) {
  const V zero = {};
  int i = 0;
  for (; i + 4 <= M; i += 4) {
    const float *x0 = x + (long)i * K, *x1 = x0 + K, *x2 = x1 + K, *x3 = x2 + K;
    float *c0 = crow(i), *c1 = crow(i + 1), *c2 = crow(i + 2), *c3 = crow(i + 3);
    int j0 = 0;
    // two panels a pass: eight sums in flight, enough to cover the FMA latency at K = r = 8
    for (; j0 + 2 * L <= N; j0 += 2 * L) {
      const float* p = wt + (long)(j0 / L) * K * L;
      const float* q = p + K * L;
      V a0 = zero, a1 = zero, a2 = zero, a3 = zero, b0 = zero, b1 = zero, b2 = zero, b3 = zero;
      for (int k = 0; k < K; k++) {
        const V pk = loadu<V>(p + k * L), qk = loadu<V>(q + k * L);
        a0 = a0 + x0[k] * pk;
        a1 = a1 + x1[k] * pk;
        a2 = a2 + x2[k] * pk;
        a3 = a3 + x3[k] * pk;
        b0 = b0 + x0[k] * qk;
        b1 = b1 + x1[k] * qk;
        b2 = b2 + x2[k] * qk;
        b3 = b3 + x3[k] * qk;
      }
      store_panel<V, L>(c0 + j0, a0, L, accumulate);
      store_panel<V, L>(c1 + j0, a1, L, accumulate);
      store_panel<V, L>(c2 + j0, a2, L, accumulate);
      store_panel<V, L>(c3 + j0, a3, L, accumulate);
      store_panel<V, L>(c0 + j0 + L, b0, L, accumulate);
      store_panel<V, L>(c1 + j0 + L, b1, L, accumulate);
      store_panel<V, L>(c2 + j0 + L, b2, L, accumulate);
      store_panel<V, L>(c3 + j0 + L, b3, L, accumulate);
    }
    for (; j0 < N; j0 += L) {
      const float* p = wt + (long)(j0 / L) * K * L;
      V a0 = zero, a1 = zero, a2 = zero, a3 = zero;
      for (int k = 0; k < K; k++) {
        const V pk = loadu<V>(p + k * L);
        a0 = a0 + x0[k] * pk;
        a1 = a1 + x1[k] * pk;
        a2 = a2 + x2[k] * pk;
        a3 = a3 + x3[k] * pk;
      }
      store_panel<V, L>(c0 + j0, a0, N - j0, accumulate);
      store_panel<V, L>(c1 + j0, a1, N - j0, accumulate);
      store_panel<V, L>(c2 + j0, a2, N - j0, accumulate);
      store_panel<V, L>(c3 + j0, a3, N - j0, accumulate);
    }
  }
  for (; i < M; i++) {
    const float* xi = x + (long)i * K;
    float* ci = crow(i);
    for (int j0 = 0; j0 < N; j0 += L) {
      const float* p = wt + (long)(j0 / L) * K * L;
      V acc = zero;
      for (int k = 0; k < K; k++) acc = acc + xi[k] * loadu<V>(p + k * L);
      store_panel<V, L>(ci + j0, acc, N - j0, accumulate);
    }
  }
}

template <class CRow>
__attribute__((always_inline)) inline void small_k_rows(int M, int K, const float* x, const float* wt, int N,
                                                       CRow crow, bool accumulate) {
  if (small_k_lanes() == 16)
    small_k_lanes_rows<v16f, 16>(M, K, x, wt, N, crow, accumulate);
  else
    small_k_lanes_rows<v8f, 8>(M, K, x, wt, N, crow, accumulate);
}

LORA_MULTI(void, dots_small_k_rows,
           (int M, int K, const float* x, const float* wt, int N, float* c, long ldc, bool accumulate),
           (M, K, x, wt, N, c, ldc, accumulate)) {
  small_k_rows(M, K, x, wt, N, [&](int i) { return c + (long)i * ldc; }, accumulate);
}

// The same outputs added into rows of a batch: out row i is c + rows[i] * ldc. c + acc is the f32 sum
// of c and the product dots_small_k_rows writes, so this is that product, then an add, in one pass.
LORA_MULTI(void, dots_small_k_scatter,
           (int M, int K, const float* x, const float* wt, int N, float* c, const int32_t* rows, long ldc),
           (M, K, x, wt, N, c, rows, ldc)) {
  small_k_rows(M, K, x, wt, N, [&](int i) { return c + (long)rows[i] * ldc; }, true);
}

// dst [8][K] = 8 rows of a 16-bit weight (bf16, else f16) in f32
LORA_MULTI(void, widen_rows, (float* dst, const uint16_t* const* h, int K, bool bf16), (dst, h, K, bf16)) {
  for (int jj = 0; jj < 8; jj++) {
    float* d = dst + (long)jj * K;
    const uint16_t* src = h[jj];
    if (bf16) {
      SIMD for (int k = 0; k < K; k++) d[k] = bf16_to_f32(src[k]);
    } else {
      for (int k = 0; k < K; k++) d[k] = f16_table[src[k]];
    }
  }
}

// A weight's 8 values (f32, or bf16 widened by a shift) and one value, in f32.
__attribute__((always_inline)) inline v8f load8(const float* p) { return *(const v8f*)p; }
__attribute__((always_inline)) inline v8f load8(const uint16_t* p) {
  typedef unsigned short v8h __attribute__((vector_size(16), aligned(2)));
  typedef unsigned v8u __attribute__((vector_size(32)));
  return (v8f)(__builtin_convertvector(*(const v8h*)p, v8u) << 16);
}
__attribute__((always_inline)) inline float load1(const float* p) { return *p; }
__attribute__((always_inline)) inline float load1(const uint16_t* p) { return bf16_to_f32(*p); }

__attribute__((always_inline)) inline v16f load16(const float* p) { return *(const v16f*)p; }
__attribute__((always_inline)) inline v16f load16(const uint16_t* p) {
  typedef unsigned short v16h __attribute__((vector_size(32), aligned(2)));
  typedef unsigned v16u __attribute__((vector_size(64)));
  return (v16f)(__builtin_convertvector(*(const v16h*)p, v16u) << 16);
}

// Eight dots x . w[j] (j < 8, each w[j] contiguous along k) at once. Output j's f32 operations: lanes
// l < 8 of acc_j summed over chunks c in order (acc_j[l] = sum_c x[8c + l] w_j[8c + l]), the 8 lanes
// added in one fixed tree ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), then the k past the last
// chunk in order: the same for every j, so an output's bits depend on its x row and weight row only,
// never on which outputs share its eight or on M. The tree is simd.h's sum8x8; a horizontal sum per dot
// cost as much as the dot at K 64 (GEMV at 12-20 GFLOP/s on a Xeon with AVX-512, one thread, before it).
// Wide (AVX-512, simd_level() 2): the chunks of 16 k first, on 16 lanes, each accumulator then folded to
// 8 lanes (lane l + lane l + 8), before the chunks of 8 left: twice the products per instruction where
// the registers are 512 bits wide. One level runs per process, so a row's bits still do not depend on M.
template <bool Wide, class T>
__attribute__((always_inline)) inline v8f dots8(const float* x, const T* const* w, int K) {
  v8f a[8];
  const int K8 = K / 8 * 8;
  const v8f zero = {0, 0, 0, 0, 0, 0, 0, 0};
  for (int j = 0; j < 8; j++) a[j] = zero;
  int k = 0;
  if (Wide && K >= 16) {
    v16f b[8];
    const v16f zero16 = {};
    for (int j = 0; j < 8; j++) b[j] = zero16;
    for (; k + 16 <= K; k += 16) {
      const v16f xk = *(const v16f*)(x + k);
      for (int j = 0; j < 8; j++) b[j] += xk * load16(w[j] + k);
    }
    for (int j = 0; j < 8; j++)
      a[j] = __builtin_shufflevector(b[j], b[j], 0, 1, 2, 3, 4, 5, 6, 7) +
             __builtin_shufflevector(b[j], b[j], 8, 9, 10, 11, 12, 13, 14, 15);
  }
  for (; k < K8; k += 8) {
    const v8f xk = *(const v8f*)(x + k);
    for (int j = 0; j < 8; j++) a[j] += xk * load8(w[j] + k);
  }
  v8f d = sum8x8(a);
  for (int k = K8; k < K; k++)
    for (int j = 0; j < 8; j++) d[j] += x[k] * load1(w[j] + k);
  return d;
}

// c[i, j] (+)= dots8(x_i, w)[j] for rows i < M (row i at xrow(i)) and the first nj of the 8 outputs
template <class T, class XRow>
__attribute__((always_inline)) inline void dots8_each_row(int M, int K, XRow xrow, const T* const* w, int nj,
                                                         float* c, long ldc, bool accumulate) {
  const bool wide = simd_level() >= 2;
  for (int i = 0; i < M; i++) {
    const v8f d = wide ? dots8<true>(xrow(i), w, K) : dots8<false>(xrow(i), w, K);
    float* ci = c + (long)i * ldc;
    for (int jj = 0; jj < nj; jj++) ci[jj] = accumulate ? ci[jj] + d[jj] : d[jj];
  }
}
template <class T>
__attribute__((always_inline)) inline void dots8_each_row(int M, int K, const float* x, const T* const* w, int nj,
                                                         float* c, long ldc, bool accumulate) {
  dots8_each_row(M, K, [&](int i) { return x + (long)i * K; }, w, nj, c, ldc, accumulate);
}
LORA_MULTI(void, dots8_rows,
           (int M, int K, const float* x, const float* const* w, int nj, float* c, long ldc, bool accumulate),
           (M, K, x, w, nj, c, ldc, accumulate)) {
  dots8_each_row(M, K, x, w, nj, c, ldc, accumulate);
}
LORA_MULTI(void, dots8_rows_bf16,
           (int M, int K, const float* x, const uint16_t* const* w, int nj, float* c, long ldc, bool accumulate),
           (M, K, x, w, nj, c, ldc, accumulate)) {
  dots8_each_row(M, K, x, w, nj, c, ldc, accumulate);
}

// C[i, j] (+)= dot(x_i, W[j]) for rows i < M, columns [n0, n1) of an f32 weight [N, K] (row stride csB):
// gemv's f32 dots in one call, so the ISA is picked once per product, not once per dot: dots8 over the
// weight rows in place; few k go through the panels above
LORA_MULTI(void, dots_f32,
           (int M, int K, const float* x, const float* W, long csB, float* C, long ldc, bool accumulate, int n0,
            int n1),
           (M, K, x, W, csB, C, ldc, accumulate, n0, n1)) {
  if (K <= DOTS_SMALL_K) {  // few k (a LoRA up-projection's K = r): see dots_small_k_rows
    thread_local std::vector<float> wt;
    wt.resize((size_t)small_k_panel(n1 - n0, K));
    pack_small_k(wt.data(), W + (long)n0 * csB, csB, K, n1 - n0);
    dots_small_k_rows(M, K, x, wt.data(), n1 - n0, C + n0, ldc, accumulate);
    return;
  }
  // 8 outputs at a time, each row against their 8 weight rows (8 x K floats, kept in L1 across rows)
  for (int j0 = n0; j0 < n1; j0 += 8) {
    const int nj = n1 - j0 < 8 ? n1 - j0 : 8;
    const float* w[8];
    for (int jj = 0; jj < 8; jj++) w[jj] = W + (long)(jj < nj ? j0 + jj : j0) * csB;  // pads repeat j0
    dots8_each_row(M, K, x, w, nj, C + j0, ldc, accumulate);
  }
}

// dots_f32's dots (K > DOTS_SMALL_K) over rows of a batch read in place: row i is x + rows[i] * K
LORA_MULTI(void, dots_f32_gather,
           (int M, int K, const float* x, const int32_t* rows, const float* W, long csB, float* C, long ldc, int n0,
            int n1),
           (M, K, x, rows, W, csB, C, ldc, n0, n1)) {
  for (int j0 = n0; j0 < n1; j0 += 8) {
    const int nj = n1 - j0 < 8 ? n1 - j0 : 8;
    const float* w[8];
    for (int jj = 0; jj < 8; jj++) w[jj] = W + (long)(jj < nj ? j0 + jj : j0) * csB;
    dots8_each_row(M, K, [&](int i) { return x + (long)rows[i] * K; }, w, nj, C + j0, ldc, false);
  }
}

namespace {

// y[j] += s * w[j] over a weight row contiguous along j
LORA_MULTI(void, axpy_f32, (float* y, float s, const float* w, int n), (y, s, w, n)) {
#pragma omp simd
  for (int j = 0; j < n; j++) y[j] += s * w[j];
}

LORA_MULTI(void, axpy_bf16, (float* y, float s, const uint16_t* w, int n), (y, s, w, n)) {
#pragma omp simd
  for (int j = 0; j < n; j++) y[j] += s * bf16_to_f32(w[j]);
}

// C[M, N] (+)= op(A) @ op(B) for M <= GEMV_ROWS (INVARIANT_ROWS for a rowInvariant product), columns [n0, n1)
void gemv(int M, int K, const float* A, long rsA, long csA, const void* B, int bt, long rsB, long csB, float* C,
          long ldc, bool accumulate, int n0, int n1) {
  // the rows of op(A), contiguous and (for a bf16 weight) rounded to bf16; an f32 product whose A rows
  // already are contiguous reads them in place (a copy per call was a malloc, a memset and a copy at
  // decode sizes, where the products take a microsecond or two)
  const bool in_place_x = csA == 1 && rsA == K && bt != B_BF16;
  std::vector<float> xs(in_place_x ? 0 : (size_t)M * K);
  if (!in_place_x)
    for (int i = 0; i < M; i++) load_row(xs.data() + (long)i * K, A + (long)i * rsA, csA, K, bt == B_BF16);
  const float* x = in_place_x ? A : xs.data();
  if ((rsB == 1 || K == 1) && bt == B_F32) {  // B(k, j) = W[j][k]: one dot per output
    dots_f32(M, K, x, (const float*)B, csB, C, ldc, accumulate, n0, n1);
  } else if (rsB == 1 || K == 1) {
    // a 16-bit W [N, K], 8 rows at a time: for one row bf16 is widened in registers as it is read; for
    // more, each weight row is widened once into f32 (the same values: widening is exact), which beat
    // widening it again for every row (2.4 against 4.2 us at M 8, N = K = 64, a Xeon with AVX-512)
    const bool in_place = bt == B_BF16 && M == 1;
    std::vector<float> w8(in_place ? 0 : (size_t)8 * K);
    for (int j0 = n0; j0 < n1; j0 += 8) {
      const int nj = n1 - j0 < 8 ? n1 - j0 : 8;
      const uint16_t* h[8];
      for (int jj = 0; jj < 8; jj++) h[jj] = (const uint16_t*)B + (size_t)(jj < nj ? j0 + jj : j0) * csB;
      if (in_place) {
        dots8_rows_bf16(M, K, x, h, nj, C + j0, ldc, accumulate);
        continue;
      }
      const float* w[8];
      for (int jj = 0; jj < 8; jj++) w[jj] = w8.data() + (long)jj * K;
      widen_rows(w8.data(), h, K, bt == B_BF16);
      dots8_rows(M, K, x, w, nj, C + j0, ldc, accumulate);
    }
  } else {  // B(k, j) = W[k][j] (csB == 1): rows of B scaled and added, each row read once for all M
    const int n = n1 - n0;
    std::vector<float> y((size_t)M * n, 0.0f), row(bt == B_F16 ? n : 0);
    for (int k = 0; k < K; k++) {
      const float* wk = (const float*)B + (long)k * rsB + n0;
      const uint16_t* hk = (const uint16_t*)B + (long)k * rsB + n0;
      if (bt == B_F16) {
        for (int j = 0; j < n; j++) row[j] = f16_table[hk[j]];
        wk = row.data();
      }
      for (int i = 0; i < M; i++) {
        float s = x[(long)i * K + k];
        if (bt == B_BF16)
          axpy_bf16(y.data() + (long)i * n, s, hk, n);
        else
          axpy_f32(y.data() + (long)i * n, s, wk, n);
      }
    }
    for (int i = 0; i < M; i++) {
      float* c = C + (long)i * ldc + n0;
      const float* yi = y.data() + (long)i * n;
      for (int j = 0; j < n; j++) c[j] = accumulate ? c[j] + yi[j] : yi[j];
    }
  }
}

}  // namespace

const char* gemm_isa() { return isa().name; }
bool gemm_native_bf16() { return isa().bf16 != nullptr; }

// Whether a bf16 weight's products beat f32 here, from measurements (README, "16-bit base weights"). A
// VDPBF16PS does twice the multiply-adds of an f32 FMA, but the rate depends on the FMA pipes: AMD's Zen
// 4 runs a 512-bit FMA as two 256-bit halves, so bf16 doubles it (GPT-2 small's LoRA step: 242 tok/s
// with a bf16 base, 144 with f32), while an Intel Xeon of the Sapphire Rapids class has two full 512-bit
// FMA pipes and VDPBF16PS on one port, so bf16 gains nothing and packs more (132 against 183). Timing the
// two at run time was tried and dropped: under load the choice differed between processes, which broke
// bit-identical resumes. So: bf16 where the level has bf16 products and the CPU is AMD's.
bool gemm_bf16_faster() {
#if defined(__x86_64__)
  __builtin_cpu_init();
  return gemm_native_bf16() && __builtin_cpu_is("amd");
#else
  return false;
#endif
}
const char* gemm_cpu_isa() { return LEVEL_NAMES[choice().cpu]; }
bool gemm_isa_forced() { return choice().forced; }
const char* gemm_isa_error() { return choice().error.c_str(); }
std::vector<std::string> gemm_supported_isas() {
  std::vector<std::string> v;
  for (int l = choice().cpu; l >= 0; l--) v.push_back(LEVEL_NAMES[l]);
  return v;
}

int simd_level() {
#if defined(__aarch64__)
  return 0;  // LORA_MULTI is plain code off x86: the element-wise loops are vectorized for NEON at -O3
#else
  static const int level = choice().level >= L_AVX512 ? 2 : choice().level == L_AVX2 ? 1 : 0;
  return level;
#endif
}

// Skinny products skip packing the operand that is reused least (BLIS's "sup" idea): with N <= UA_COLS a
// row of A is used by at most 2 B micro-panels, so packing A (one pass over M x K) costs as much as the
// FMAs it feeds; with M <= UB_ROWS the same holds for B. Measured on Zen 3 (LoRA's rank-8 products).
constexpr int UA_COLS = 32, UB_ROWS = 24;
// Packed B panels are PSKEW floats (a cache line) apart, not back to back: at KC 256 a 16-wide panel is
// exactly 16 KB, so row k of every panel fell in one L1 set, and packing a row of a wide row-major B
// (192 panels at N = 3072) thrashed that set's 8 ways.
constexpr int PSKEW = 16;

void gemm_single(int M, int N, int K, const float* A, long rsA, long csA, const void* B, int bt, long rsB,
                 long csB, float* C, long ldc, bool accumulate, Tri tri, long off) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    if (!accumulate)
      for (int i = 0; i < M; i++) std::memset(C + (long)i * ldc, 0, sizeof(float) * N);
    return;
  }
  if (off < 0) tri = TRI_NONE;  // more queries than keys (never from attention): no skipping, always exact
  const Isa& s = isa();
  const int MR = s.MR, NR = s.NR, MC = s.MC, NC = s.NC;
  const bool dot = bt == B_BF16 && s.bf16;
  // A in place needs no bf16 rounding of A; B in place must be f32 with contiguous rows
  const bool inA = !dot && s.ua && bt != B_BF16 && N <= UA_COLS && M >= MR;
  const bool inB = !dot && !inA && s.ub && bt == B_F32 && csB == 1 && M <= UB_ROWS && N >= NR;
  Scratch& w = scratch;
  w.tile.resize(MR * NR);
  const int kcb = dot ? KC2 : s.KC;
  uint32_t *a2 = nullptr, *b2 = nullptr;
  float *pa = nullptr, *pb = nullptr;
  if (dot) {
    a2 = w.a2.get((size_t)((MC + MR - 1) / MR * MR) * (KC2 / 2));
    b2 = w.b2.get((size_t)((NC + NR - 1) / NR * NR) * (KC2 / 2));
  } else {
    pa = w.a.get((size_t)(inA ? MR : (MC + MR - 1) / MR * MR) * kcb);
    pb = w.b.get((size_t)(inB ? 1 : (NC + NR - 1) / NR) * ((size_t)kcb * NR + PSKEW));
  }
  if (inB && s.m4 && (M == 4 || M == 8) && tri == TRI_NONE) {
    // 4 or 8 rows over a row-major B: 4 x 16 tiles with both operands in place; a last partial column
    // panel is packed and goes through a tile buffer
    const int nfull = N / NR * NR;
    float tile[4 * 16];
    for (int pc = 0; pc < K; pc += kcb) {
      const int kc = K - pc < kcb ? K - pc : kcb;
      const bool load = accumulate || pc > 0;
      if (nfull < N) pack_b(pb, B, bt, rsB, csB, pc, kc, nfull, N - nfull, NR, s.vpack, (long)kc * NR);
      for (int i = 0; i < M; i += 4) {
        const float* ap = A + (long)i * rsA + (long)pc * csA;
        float* c = C + (long)i * ldc;
        for (int j = 0; j < nfull; j += 16)
          s.m4(kc, ap, rsA, csA, (const float*)B + (long)pc * rsB + j, rsB, c + j, ldc, load);
        if (nfull < N) {
          const int nr = N - nfull;
          if (load)
            for (int r = 0; r < 4; r++)
              for (int j = 0; j < nr; j++) tile[r * 16 + j] = c[(long)r * ldc + nfull + j];
          s.m4(kc, ap, rsA, csA, pb, NR, tile, 16, load);
          for (int r = 0; r < 4; r++)
            for (int j = 0; j < nr; j++) c[(long)r * ldc + nfull + j] = tile[r * 16 + j];
        }
      }
    }
    return;
  }
  if (inA && s.n8 && N <= 8 && M >= 12 && tri == TRI_NONE) {
    // N <= 8: 12-row tiles of the 12 x 8 kernel over one packed B panel, then the last M % 12 rows by
    // the general path (same depth blocks, so the same sums)
    const int M12 = M / 12 * 12;
    float tile8[12 * 8];
    for (int pc = 0; pc < K; pc += kcb) {
      const int kc = K - pc < kcb ? K - pc : kcb;
      const bool load = accumulate || pc > 0;
      pack_b(pb, B, bt, rsB, csB, pc, kc, 0, N, NR, s.vpack, (long)kc * NR);
      for (int i = 0; i < M12; i += 12) {
        float* c = C + (long)i * ldc;
        const float* ap = A + (long)i * rsA + (long)pc * csA;
        if (N == 8) {
          s.n8(kc, ap, rsA, csA, pb, NR, c, ldc, load);
          continue;
        }
        if (load)
          for (int r = 0; r < 12; r++)
            for (int j = 0; j < N; j++) tile8[r * 8 + j] = c[(long)r * ldc + j];
        s.n8(kc, ap, rsA, csA, pb, NR, tile8, 8, load);
        for (int r = 0; r < 12; r++)
          for (int j = 0; j < N; j++) c[(long)r * ldc + j] = tile8[r * 8 + j];
      }
    }
    if (M12 < M)
      gemm_single(M - M12, N, K, A + (long)M12 * rsA, rsA, csA, B, bt, rsB, csB, C + (long)M12 * ldc, ldc,
                  accumulate);
    return;
  }
  for (int jc = 0; jc < N; jc += NC) {
    int nc = N - jc < NC ? N - jc : NC;
    for (int pc = 0; pc < K; pc += kcb) {
      int kc = K - pc < kcb ? K - pc : kcb;
      int kp = (kc + 1) / 2;
      const long ps = (long)kc * NR + PSKEW;  // packed B panels' stride (see PSKEW)
      bool load = accumulate || pc > 0;
      const int nfull = nc / NR * NR;  // columns in whole panels (B in place reads those where they lie)
      if (dot)
        pack_b2(b2, (const uint16_t*)B, rsB, csB, pc, kc, jc, nc, NR);
      else if (!inB && bt == B_F32 && csB == 1)  // see pack_b_rows
        pack_b_rows(pb, (const float*)B, rsB, pc, kc, jc, nc, NR, ps);
      else if (inB && nfull < nc)  // only the last, partial panel is packed (zero padded)
        pack_b(pb, B, bt, rsB, csB, pc, kc, jc + nfull, nc - nfull, NR, s.vpack, ps);
      // A transposed B (x @ W^T: W's rows are contiguous along k) is packed one micro-panel at a time,
      // during the first row block that runs:
      // each panel is packed right before its tiles use it (still in L1), and reading B from memory
      // interleaves with the FMAs instead of being a separate bandwidth-bound pass (at M = 128, B is a
      // 154 MB vocabulary matrix read once). Later row blocks find every panel packed.
      bool bpacked = dot || inB || (bt == B_F32 && csB == 1);
      for (int ic = 0; ic < M; ic += MC) {
        int mc = M - ic < MC ? M - ic : MC;
        if (tri == TRI_K_LOWER && pc > off + ic + mc - 1) continue;  // these rows' A is 0 in this block
        if (tri == TRI_K_UPPER && pc + kc - 1 < ic - off) continue;
        const bool packing = !bpacked;
        bpacked = true;
        const int mfull = mc / MR * MR;
        if (dot)
          pack_a2(a2, A, rsA, csA, ic, mc, pc, kc, MR);
        else if (!inA)
          pack_a(pa, A, rsA, csA, ic, mc, pc, kc, MR, bt == B_BF16, s.vpack);
        else if (mfull < mc)
          pack_a(pa, A, rsA, csA, ic + mfull, mc - mfull, pc, kc, MR, false, s.vpack);
        for (int jr = 0; jr < nc; jr += NR) {
          int nr = nc - jr < NR ? nc - jr : NR;
          if (packing) pack_b(pb + (long)(jr / NR) * ps, B, bt, rsB, csB, pc, kc, jc + jr, nr, NR, s.vpack, ps);
          for (int ir = 0; ir < mc; ir += MR) {
            int mr = mc - ir < MR ? mc - ir : MR;
            const long r0 = ic + ir, r1 = r0 + mr - 1;  // the tile's first and last row of C
            // causal structure: skip the tile, or run only the depth where A is not 0
            int k0 = 0, k1 = kc;
            if (tri == TRI_N && jc + jr > off + r1) continue;
            if (tri == TRI_K_LOWER) k1 = (int)std::min<long>(kc, off + r1 + 1 - pc);
            if (tri == TRI_K_UPPER) k0 = (int)std::max<long>(0, r0 - off - pc);
            if (k1 <= k0) continue;  // load is true here: pc = 0 always has depth, TRI_K_UPPER accumulates
            float* c = C + r0 * ldc + jc + jr;
            bool full = mr == MR && nr == NR;
            float* dst = full ? c : w.tile.data();
            long ld = full ? ldc : NR;
            if (!full && load)
              for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++) w.tile[i * NR + j] = c[(long)i * ldc + j];
            if (dot) {
              s.bf16(kp, a2 + (long)ir * kp, b2 + (long)jr * kp, dst, ld, load);
            } else {
              // A: the packed block, or in place (its partial last row block packed); B likewise
              const bool ain = inA && mr == MR, bin = inB && nr == NR;
              const float* ap = ain ? A + r0 * rsA + (long)(pc + k0) * csA
                                    : pa + (long)(inA ? 0 : ir) * kc + (long)k0 * MR;
              const float* bp = bin ? (const float*)B + (long)(pc + k0) * rsB + jc + jr
                                    : pb + (inB ? 0 : (long)(jr / NR) * ps) + (long)k0 * NR;
              // the next tile down reads (or writes) its C rows next: ask for them now, a whole
              // tile's FMAs ahead (C of a 256 x 3072 product is 3 MB: its tiles come from L3)
              if (ir + 2 * MR <= mc && full)
                for (int i = MR; i < 2 * MR; i++) {
                  __builtin_prefetch(c + (long)i * ldc, 1, 3);
                  __builtin_prefetch(c + (long)i * ldc + NR - 1, 1, 3);
                }
              if (ain)
                s.ua(k1 - k0, ap, rsA, csA, bp, NR, dst, ld, load);
              else if (bin)
                s.ub(k1 - k0, ap, 1, MR, bp, rsB, dst, ld, load);
              else
                s.f32(k1 - k0, ap, bp, dst, ld, load);
            }
            if (!full)
              for (int i = 0; i < mr; i++)
                for (int j = 0; j < nr; j++) c[(long)i * ldc + j] = w.tile[i * NR + j];
          }
        }
      }
    }
  }
}

// Below this many multiply-adds per thread, splitting costs more than it saves.
constexpr double MIN_SPLIT_WORK = 1 << 18;

void gemm(const GemmArgs& g0) {
  if (g0.batch <= 0 || g0.M <= 0 || g0.N <= 0) return;
  GemmArgs g = g0;
  // a batch over one shared B whose A and C items follow each other row after row (x @ W^T of a
  // [batch, T, C] activation) is one product of batch * M rows: B is packed once, not once per item
  if (g.batch > 1 && g.strideB == 0 && g.strideA == (long)g.M * g.rsA && g.strideC == (long)g.M * g.ldc &&
      (double)g.batch * g.M < 2147483647.0) {
    g.M *= g.batch;
    g.batch = 1;
  }
  const Isa& s = isa();
  const size_t esize = g.btype == B_F32 ? 4 : 2;
  auto item = [&](int b, int m0, int m1, int n0, int n1) {
    const char* Bb = (const char*)g.B + (size_t)b * g.strideB * esize + (size_t)n0 * g.csB * esize;
    gemm_single(m1 - m0, n1 - n0, g.K, g.A + b * g.strideA + (long)m0 * g.rsA, g.rsA, g.csA, Bb, g.btype, g.rsB,
                g.csB, g.C + b * g.strideC + (long)m0 * g.ldc + n0, g.ldc, g.accumulate);
  };
  const double work = (double)g.M * g.N * (g.K > 0 ? g.K : 1);
  // one product, split by the longer side in whole micro-tiles (the result does not depend on the split)
  // a few rows over a row-major f32 B (a LoRA weight gradient, dB = dY^T (x A^T)) take the tiled path with
  // B read in place: the GEMV's axpy loop stores its accumulators on every k (measured 2x slower at M = 8);
  // a row or two (decoding) stays on the GEMV, which reads the weight once
  // (K == 1 gives csB == 1 to a transposed weight too: it stays on the GEMV, whose rows do not depend on M)
  const bool use_gemv = (g.M <= GEMV_ROWS || (g.invariant && g.M <= INVARIANT_ROWS && g.rsB == 1)) && g.K > 0 &&
                        !(s.ub && g.btype == B_F32 && g.csB == 1 && g.rsB != 1 && g.M >= 4);
  auto one = [&](int b) {
    if (use_gemv) {  // generation: memory-bound, so split the weight's columns
      const char* Bb = (const char*)g.B + (size_t)b * g.strideB * esize;
      long grain = (long)(MIN_SPLIT_WORK / ((double)g.M * g.K)) + 16;
      parallel_range(g.N, grain, 16, [&](long n0, long n1) {
        gemv(g.M, g.K, g.A + b * g.strideA, g.rsA, g.csA, Bb, g.btype, g.rsB, g.csB, g.C + b * g.strideC, g.ldc,
             g.accumulate, (int)n0, (int)n1);
      });
    } else if (get_threads() == 1 || work < MIN_SPLIT_WORK * 2) {
      item(b, 0, g.M, 0, g.N);
    } else if (g.N >= g.M && g.N >= 2 * s.NR) {
      parallel_range(g.N, s.NR, s.NR, [&](long n0, long n1) { item(b, 0, g.M, (int)n0, (int)n1); });
    } else {
      parallel_range(g.M, s.MR, s.MR, [&](long m0, long m1) { item(b, (int)m0, (int)m1, 0, g.N); });
    }
  };
  // batch items to threads when each writes its own output and there is enough work; items that share
  // one output (strideC 0, accumulating a broadcast operand's gradient) run in order
  if (g.batch > 1 && g.strideC != 0 && !use_gemv && work * g.batch >= MIN_SPLIT_WORK * 2) {
    parallel_range(g.batch, 1, 1, [&](long b0, long b1) {
      for (long b = b0; b < b1; b++) item((int)b, 0, g.M, 0, g.N);
    });
    return;
  }
  for (int b = 0; b < g.batch; b++) one(b);
}

}  // namespace lora
