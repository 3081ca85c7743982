// Packed, register-blocked GEMM (BLIS loop order: NC columns of B, KC depth, MC rows of A, then NR x MR
// micro-tiles). Micro-kernels, chosen once at load by CPU feature:
//   avx512: 12x32 f32 FMA tile (24 zmm accumulators)     avx2: 6x16 (12 ymm)
//   generic: 4x16 plain C++ the compiler vectorizes (NEON on arm64)
//   avx512_bf16: 12x32 tile of vdpbf16ps on k-pairs: the bf16-weight path, twice the f32 FLOP rate
// A bf16 weight without avx512_bf16 takes the f32 kernels on bf16-rounded values: the same products.
#include "gemm.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <cstdint>
#include <algorithm>
#include <cstring>
#include <vector>

#include "half.h"
#include "pool.h"
#include "simd.h"

namespace lora {
namespace {

constexpr int KC = 192;  // depth block: a 32-wide B micro-panel of KC floats is 24 KB, in L1
constexpr int KC2 = 384; // the same 24 KB in bf16 holds twice the depth
constexpr int MC = 96;   // rows of A per block (a multiple of 12 and 6 and 4)
constexpr int NC = 1536; // columns of B per block (KC x NC floats = 1.1 MB, in L2/L3)

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

__attribute__((target("avx2,fma"))) void k_avx2(int kc, const float* Ap, const float* Bp, float* C, long ldc,
                                                bool load) {
  __m256 c[6][2];
  for (int i = 0; i < 6; i++) {
    c[i][0] = load ? _mm256_loadu_ps(C + i * ldc) : _mm256_setzero_ps();
    c[i][1] = load ? _mm256_loadu_ps(C + i * ldc + 8) : _mm256_setzero_ps();
  }
  for (int k = 0; k < kc; k++) {
    __m256 b0 = _mm256_loadu_ps(Bp + k * 16), b1 = _mm256_loadu_ps(Bp + k * 16 + 8);
    const float* a = Ap + k * 6;
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
      __m256 ai = _mm256_broadcast_ss(a + i);
      c[i][0] = _mm256_fmadd_ps(ai, b0, c[i][0]);
      c[i][1] = _mm256_fmadd_ps(ai, b1, c[i][1]);
    }
  }
  for (int i = 0; i < 6; i++) {
    _mm256_storeu_ps(C + i * ldc, c[i][0]);
    _mm256_storeu_ps(C + i * ldc + 8, c[i][1]);
  }
}

#endif  // __x86_64__

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

struct Isa {
  const char* name;
  int MR, NR;
  KernelF32 f32;
  KernelBF16 bf16;  // null: bf16 weights go through the f32 kernel on rounded values
};

Isa pick() {
  for (int h = 0; h < 65536; h++) f16_table[h] = f16_to_f32((uint16_t)h);
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) {
    bool bf = __builtin_cpu_supports("avx512bf16");
    return {bf ? "avx512+bf16" : "avx512", 12, 32, k_avx512, bf ? k_avx512_bf16 : nullptr};
  }
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return {"avx2", 6, 16, k_avx2, nullptr};
#endif
  return {"generic", 4, 16, k_generic, nullptr};
}

const Isa& isa() {
  static Isa i = pick();
  return i;
}

struct Scratch {
  std::vector<float> a, b, tile;
  std::vector<uint32_t> a2, b2;
};
thread_local Scratch scratch;

// f32 path: pack A rows [i0, i0+mc) x depth [p0, p0+kc) into MR-row panels [kc][MR] (zero padded);
// round = true rounds each value to bf16 (a bf16 weight on a CPU without bf16 products)
void pack_a(float* dst, const float* A, long rsA, long csA, int i0, int mc, int p0, int kc, int MR, bool round) {
  for (int r = 0; r < mc; r += MR, dst += (long)kc * MR) {
    int mr = mc - r < MR ? mc - r : MR;
    if (mr < MR) std::memset(dst, 0, sizeof(float) * kc * MR);
    const float* base = A + (long)(i0 + r) * rsA + (long)p0 * csA;
    // read along whichever direction of A is contiguous
    if (csA == 1) {
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

void pack_b(float* dst, const void* B, int bt, long rsB, long csB, int p0, int kc, int j0, int nc, int NR) {
  for (int c = 0; c < nc; c += NR, dst += (long)kc * NR) {
    int nr = nc - c < NR ? nc - c : NR;
    if (nr < NR) std::memset(dst, 0, sizeof(float) * kc * NR);
    if (bt == B_F32 && csB == 1) {  // rows of B contiguous: copy NR floats per k
      const float* src = (const float*)B + (long)p0 * rsB + j0 + c;
      for (int k = 0; k < kc; k++) std::memcpy(dst + k * NR, src + (long)k * rsB, sizeof(float) * nr);
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

// dot of f32 x with weight row w (contiguous along k)
LORA_CLONES float dot_f32(const float* x, const float* w, int K) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int k = 0; k < K; k++) s += x[k] * w[k];
  return s;
}

LORA_CLONES float dot_bf16(const float* x, const uint16_t* w, int K) {
  float s = 0;
#pragma omp simd reduction(+ : s)
  for (int k = 0; k < K; k++) s += x[k] * bf16_to_f32(w[k]);
  return s;
}

// y[j] += s * w[j] over a weight row contiguous along j
LORA_CLONES void axpy_f32(float* y, float s, const float* w, int n) {
#pragma omp simd
  for (int j = 0; j < n; j++) y[j] += s * w[j];
}

LORA_CLONES void axpy_bf16(float* y, float s, const uint16_t* w, int n) {
#pragma omp simd
  for (int j = 0; j < n; j++) y[j] += s * bf16_to_f32(w[j]);
}

// C[M, N] (+)= op(A) @ op(B) for M <= GEMV_ROWS, columns [n0, n1)
void gemv(int M, int K, const float* A, long rsA, long csA, const void* B, int bt, long rsB, long csB, float* C,
          long ldc, bool accumulate, int n0, int n1) {
  std::vector<float> x((size_t)M * K), f16row;
  for (int i = 0; i < M; i++) load_row(x.data() + (long)i * K, A + (long)i * rsA, csA, K, bt == B_BF16);
  if (rsB == 1 || K == 1) {  // B(k, j) = W[j][k]: one dot per output
    if (bt == B_F16) f16row.resize(K);
    for (int j = n0; j < n1; j++) {
      const char* wj = (const char*)B + (size_t)j * csB * (bt == B_F32 ? 4 : 2);
      if (bt == B_F16)
        for (int k = 0; k < K; k++) f16row[k] = f16_table[((const uint16_t*)wj)[k]];
      for (int i = 0; i < M; i++) {
        const float* xi = x.data() + (long)i * K;
        float d = bt == B_F32    ? dot_f32(xi, (const float*)wj, K)
                  : bt == B_BF16 ? dot_bf16(xi, (const uint16_t*)wj, K)
                                 : dot_f32(xi, f16row.data(), K);
        C[(long)i * ldc + j] = accumulate ? C[(long)i * ldc + j] + d : d;
      }
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

constexpr int GEMV_ROWS = 8;  // up to here, packing the weight costs more than it saves (prefill, decode)

}  // namespace

const char* gemm_isa() { return isa().name; }
bool gemm_native_bf16() { return isa().bf16 != nullptr; }

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
  const int MR = s.MR, NR = s.NR;
  const bool dot = bt == B_BF16 && s.bf16;
  Scratch& w = scratch;
  w.tile.resize(MR * NR);
  const int kcb = dot ? KC2 : KC;
  if (dot) {
    w.a2.resize((size_t)((MC + MR - 1) / MR * MR) * (KC2 / 2));
    w.b2.resize((size_t)((NC + NR - 1) / NR * NR) * (KC2 / 2));
  } else {
    w.a.resize((size_t)((MC + MR - 1) / MR * MR) * KC);
    w.b.resize((size_t)((NC + NR - 1) / NR * NR) * KC);
  }
  for (int jc = 0; jc < N; jc += NC) {
    int nc = N - jc < NC ? N - jc : NC;
    for (int pc = 0; pc < K; pc += kcb) {
      int kc = K - pc < kcb ? K - pc : kcb;
      int kp = (kc + 1) / 2;
      bool load = accumulate || pc > 0;
      if (dot)
        pack_b2(w.b2.data(), (const uint16_t*)B, rsB, csB, pc, kc, jc, nc, NR);
      else
        pack_b(w.b.data(), B, bt, rsB, csB, pc, kc, jc, nc, NR);
      for (int ic = 0; ic < M; ic += MC) {
        int mc = M - ic < MC ? M - ic : MC;
        if (tri == TRI_K_LOWER && pc > off + ic + mc - 1) continue;  // these rows' A is 0 in this block
        if (tri == TRI_K_UPPER && pc + kc - 1 < ic - off) continue;
        if (dot)
          pack_a2(w.a2.data(), A, rsA, csA, ic, mc, pc, kc, MR);
        else
          pack_a(w.a.data(), A, rsA, csA, ic, mc, pc, kc, MR, bt == B_BF16);
        for (int jr = 0; jr < nc; jr += NR) {
          int nr = nc - jr < NR ? nc - jr : NR;
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
            if (dot)
              s.bf16(kp, w.a2.data() + (long)ir * kp, w.b2.data() + (long)jr * kp, dst, ld, load);
            else
              s.f32(k1 - k0, w.a.data() + (long)ir * kc + k0 * MR, w.b.data() + (long)jr * kc + k0 * NR, dst, ld, load);
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

void gemm(const GemmArgs& g) {
  if (g.batch <= 0 || g.M <= 0 || g.N <= 0) return;
  const Isa& s = isa();
  const size_t esize = g.btype == B_F32 ? 4 : 2;
  auto item = [&](int b, int m0, int m1, int n0, int n1) {
    const char* Bb = (const char*)g.B + (size_t)b * g.strideB * esize + (size_t)n0 * g.csB * esize;
    gemm_single(m1 - m0, n1 - n0, g.K, g.A + b * g.strideA + (long)m0 * g.rsA, g.rsA, g.csA, Bb, g.btype, g.rsB,
                g.csB, g.C + b * g.strideC + (long)m0 * g.ldc + n0, g.ldc, g.accumulate);
  };
  const double work = (double)g.M * g.N * (g.K > 0 ? g.K : 1);
  // one product, split by the longer side in whole micro-tiles (the result does not depend on the split)
  auto one = [&](int b) {
    if (g.M <= GEMV_ROWS && g.K > 0) {  // generation: memory-bound, so split the weight's columns
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
  if (g.batch > 1 && g.strideC != 0 && g.M > GEMV_ROWS && work * g.batch >= MIN_SPLIT_WORK * 2) {
    parallel_range(g.batch, 1, 1, [&](long b0, long b1) {
      for (long b = b0; b < b1; b++) item((int)b, 0, g.M, 0, g.N);
    });
    return;
  }
  for (int b = 0; b < g.batch; b++) one(b);
}

}  // namespace lora
