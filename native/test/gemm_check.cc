// Standalone conformance check of the native kernels, without Node: built from native/src (not the N-API
// glue) by any C++17 compiler, for this machine or cross-compiled (aarch64-linux-gnu-g++ -static, run
// under qemu-aarch64-static), which is how the NEON kernels are tested where no arm64 machine exists.
// test/kernels/native-arm64.test.ts builds and runs it; by hand (from the repo root):
//   g++ -O2 -std=c++17 -fno-math-errno -fno-trapping-math -fopenmp-simd -pthread native/test/gemm_check.cc native/src/gemm.cc
//       native/src/pool.cc native/src/ops.cc native/src/attention.cc -o /tmp/gemm_check && /tmp/gemm_check
// (for arm64: aarch64-linux-gnu-g++ with -static, then qemu-aarch64-static /tmp/gemm_check)
// It runs at the ISA level LORA_ISA forces (else the CPU's best) and prints that level, the levels this
// CPU runs, one line per failed check, and a last line "ok N checks" or "FAILED n of N checks" (exit 1).
//
// GEMM: every transpose the backend passes (NN, NT, TN, TT; a 16-bit weight only with A not transposed,
// as autograd allows), f32 / bf16 / f16 B, overwrite and accumulate, batches (B shared, folded into rows,
// and B per item), and sizes chosen to hit the edges: 1 x 1, tails of every tile dimension of every ISA
// (MR 4/6/8/12, NR 8/12/16/32), several depth blocks (K past KC 192/256/384), row blocks past MC, a
// column block past NC 3072, the skinny paths (N <= 8, M = 4 or 8, few rows). Each is checked against a
// naive triple loop in double, within the f32 error bound of a K-term dot product (with bf16 B, A is
// rounded to bf16 first, as the ref backend defines). Then the same products at 1 and 2 threads must give
// the same bits. The causal variants attention runs (gemm_single with TRI_N, TRI_K_LOWER, TRI_K_UPPER on
// strided operands). Element-wise: softmax, GELU, SiLU against double.
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "../src/gemm.h"
#include "../src/half.h"
#include "../src/ops.h"
#include "../src/pool.h"

using namespace lora;

namespace {

int checks = 0, failures = 0, lines = 0;

// one line per wrong value (the first 40 in all); count: this is the check's first wrong value
void fail(const std::string& what, bool count = true) {
  failures += count;
  if (++lines <= 40) std::printf("FAIL %s\n", what.c_str());
}

// deterministic values in [-1, 1)
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 2654435761u + 1) {}
  float next() {
    s = s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((s >> 40) & 0xffffff) / 8388608.0f - 1.0f;
  }
};

// a random 16-bit value of moderate magnitude (|x| in [2^-4, 4)): bf16 bits, or f16 bits
uint16_t half_bits(Rng& r, int bt) {
  const float x = r.next();
  const uint16_t sign = x < 0 ? 0x8000 : 0;
  const uint32_t m = (uint32_t)(std::fabs(x) * 1024.0f) & 0x3ff;  // 10 mantissa bits
  const uint32_t e = (uint32_t)(std::fabs(x) * 6.0f);            // 0..5
  if (bt == B_BF16) return (uint16_t)(sign | ((123 + e) << 7) | (m >> 3));
  return (uint16_t)(sign | ((11 + e) << 10) | m);
}

float decode(uint16_t h, int bt) { return bt == B_BF16 ? bf16_to_f32(h) : f16_to_f32(h); }

struct Case {
  int batch, M, N, K;
  bool tA, tB, acc;
  int bt;
  bool shareB;  // strideB 0: one weight for every batch item
};

std::string name(const Case& c) {
  char s[160];
  std::snprintf(s, sizeof s, "gemm batch %d M %d N %d K %d %s%s %s%s%s", c.batch, c.M, c.N, c.K, c.tA ? "T" : "N",
                c.tB ? "T" : "N", c.bt == B_F32 ? "f32" : c.bt == B_BF16 ? "bf16" : "f16", c.acc ? " accumulate" : "",
                c.shareB ? " shared B" : "");
  return s;
}

struct Operands {
  std::vector<float> A, C0, Bf;  // Bf: op(B)'s values as f32 (decoded), in storage order
  std::vector<uint16_t> Bh;      // the 16-bit bits, when bt != f32
};

Operands make(const Case& c, uint64_t seed) {
  Rng r(seed);
  Operands o;
  const long nb = c.shareB ? 1 : c.batch;
  o.A.resize((size_t)c.batch * c.M * c.K);
  for (auto& x : o.A) x = r.next();
  o.C0.resize((size_t)c.batch * c.M * c.N);
  for (auto& x : o.C0) x = r.next();
  o.Bf.resize((size_t)nb * c.K * c.N);
  if (c.bt == B_F32) {
    for (auto& x : o.Bf) x = r.next();
  } else {
    o.Bh.resize(o.Bf.size());
    for (size_t i = 0; i < o.Bh.size(); i++) o.Bf[i] = decode(o.Bh[i] = half_bits(r, c.bt), c.bt);
  }
  return o;
}

// the product as the addon's matmul() passes it (native/src/addon.cc Matmul)
std::vector<float> run(const Case& c, const Operands& o) {
  std::vector<float> C = o.C0;
  GemmArgs g;
  g.batch = c.batch, g.M = c.M, g.N = c.N, g.K = c.K;
  g.A = o.A.data();
  g.rsA = c.tA ? 1 : c.K, g.csA = c.tA ? c.M : 1, g.strideA = (long)c.M * c.K;
  g.B = c.bt == B_F32 ? (const void*)o.Bf.data() : (const void*)o.Bh.data();
  g.btype = c.bt;
  g.rsB = c.tB ? 1 : c.N, g.csB = c.tB ? c.K : 1, g.strideB = c.shareB ? 0 : (long)c.K * c.N;
  g.C = C.data(), g.ldc = c.N, g.strideC = (long)c.M * c.N;
  g.accumulate = c.acc;
  gemm(g);
  return C;
}

void check_gemm(const Case& c, uint64_t seed) {
  const Operands o = make(c, seed);
  set_threads(1);
  const std::vector<float> one = run(c, o);
  set_threads(2);
  const std::vector<float> two = run(c, o);
  checks++;
  int bad = 0;
  std::vector<double> a((size_t)c.M * c.K), w((size_t)c.N * c.K);  // op(A) [M][K] and op(B)ᵀ [N][K]
  for (int b = 0; b < c.batch && bad < 3; b++) {
    const float* A = o.A.data() + (size_t)b * c.M * c.K;
    const float* B = o.Bf.data() + (c.shareB ? 0 : (size_t)b * c.K * c.N);
    for (int i = 0; i < c.M; i++)
      for (int k = 0; k < c.K; k++) {
        const float x = c.tA ? A[(size_t)k * c.M + i] : A[(size_t)i * c.K + k];
        a[(size_t)i * c.K + k] = c.bt == B_BF16 ? bf16_to_f32(f32_to_bf16(x)) : x;  // bf16 x bf16 (backend.ts)
      }
    for (int j = 0; j < c.N; j++)
      for (int k = 0; k < c.K; k++) w[(size_t)j * c.K + k] = c.tB ? B[(size_t)j * c.K + k] : B[(size_t)k * c.N + j];
    for (int i = 0; i < c.M && bad < 3; i++)
      for (int j = 0; j < c.N && bad < 3; j++) {
        const size_t at = ((size_t)b * c.M + i) * c.N + j;
        double sum = c.acc ? o.C0[at] : 0.0, mag = c.acc ? std::fabs(o.C0[at]) : 0.0;
        const double *ai = a.data() + (size_t)i * c.K, *wj = w.data() + (size_t)j * c.K;
        for (int k = 0; k < c.K; k++) {
          sum += ai[k] * wj[k];
          mag += std::fabs(ai[k] * wj[k]);
        }
        // f32 summation of K + 1 terms: each partial sum rounds once (FMA: the product is exact)
        const double tol = 2.0 * (c.K + 2) * 5.96e-8 * mag + 1e-30;
        if (!(std::fabs(one[at] - sum) <= tol)) {
          char s[200];
          std::snprintf(s, sizeof s, ": C[%d][%d][%d] = %.9g, want %.9g (tolerance %.3g)", b, i, j, one[at], sum, tol);
          fail(name(c) + s, bad == 0);
          bad++;
        }
      }
  }
  if (bad) return;
  checks++;
  if (std::memcmp(one.data(), two.data(), sizeof(float) * one.size()) != 0)
    fail(name(c) + ": 1 and 2 threads give different bits");
}

// gemm_single with the causal structure attention passes (gemm.h Tri), on strided operands as attention's
// heads are (row strides past the row length); f32, at this ISA's tiles. off = Tk - Tq >= 0.
//   TRI_N:       S = Q Kᵀ [Tq, Tk]: only C[i][j] with j <= off + i is checked (the rest is unspecified)
//   TRI_K_LOWER: O = P V, P[i][k] = 0 for k > off + i
//   TRI_K_UPPER: dK += dSᵀ Q, dSᵀ[i][k] = dS[k][i] = 0 for k < i - off (accumulates)
void check_tri(Tri tri, int Tq, int Tk, int D, uint64_t seed) {
  Rng r(seed);
  const long off = Tk - Tq;
  int M, N, K;
  if (tri == TRI_N) M = Tq, N = Tk, K = D;
  else if (tri == TRI_K_LOWER) M = Tq, N = D, K = Tk;
  else M = Tk, N = D, K = Tq;
  const long lda = K + 3, ldb = N + 5, ldc = N + 2;  // B row-major [K][N] (TRI_N: read transposed, see below)
  std::vector<float> A((size_t)M * lda), B((size_t)K * ldb + (size_t)N * (K + 4)), C((size_t)M * ldc), C0;
  for (auto& x : A) x = r.next();
  for (auto& x : B) x = r.next();
  for (auto& x : C) x = r.next();
  for (int i = 0; i < M; i++)
    for (int k = 0; k < K; k++)
      if ((tri == TRI_K_LOWER && k > off + i) || (tri == TRI_K_UPPER && k < i - off)) A[(size_t)i * lda + k] = 0;
  C0 = C;
  const bool acc = tri == TRI_K_UPPER;
  // S = Q Kᵀ reads K's rows transposed (rsB 1, csB = row stride), the others a row-major B
  const long rsB = tri == TRI_N ? 1 : ldb, csB = tri == TRI_N ? K + 4 : 1;
  gemm_single(M, N, K, A.data(), lda, 1, B.data(), B_F32, rsB, csB, C.data(), ldc, acc, tri, off);
  checks++;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      if (tri == TRI_N && j > off + i) continue;
      double sum = acc ? C0[(size_t)i * ldc + j] : 0, mag = std::fabs(sum);
      for (int k = 0; k < K; k++) {
        const double p = (double)A[(size_t)i * lda + k] * B[(size_t)k * rsB + (size_t)j * csB];
        sum += p;
        mag += std::fabs(p);
      }
      if (!(std::fabs(C[(size_t)i * ldc + j] - sum) <= 2.0 * (K + 2) * 5.96e-8 * mag + 1e-30)) {
        char m[160];
        std::snprintf(m, sizeof m, "gemm_single tri %d Tq %d Tk %d D %d: C[%d][%d] = %.9g, want %.9g", (int)tri, Tq, Tk,
                      D, i, j, C[(size_t)i * ldc + j], sum);
        fail(m);
        return;
      }
    }
}

void check_elementwise() {
  Rng r(99);
  const long N = 7, Cn = 301;
  std::vector<float> x(N * Cn), y(N * Cn);
  for (auto& v : x) v = r.next() * 12.0f;
  softmax_forward(y.data(), x.data(), N, Cn);
  checks++;
  for (long n = 0; n < N; n++) {
    double m = -1e300, s = 0;
    for (long j = 0; j < Cn; j++) m = std::fmax(m, x[n * Cn + j]);
    for (long j = 0; j < Cn; j++) s += std::exp((double)x[n * Cn + j] - m);
    for (long j = 0; j < Cn; j++) {
      const double want = std::exp((double)x[n * Cn + j] - m) / s;
      if (std::fabs(y[n * Cn + j] - want) > 1e-6 * want + 1e-9) {
        fail("softmax row " + std::to_string(n) + " column " + std::to_string(j));
        return;
      }
    }
  }
  const long n = 1003;
  std::vector<float> u(n), g(n), s(n);
  for (auto& v : u) v = r.next() * 8.0f;
  gelu_forward(g.data(), u.data(), n);
  silu_forward(s.data(), u.data(), n);
  checks++;
  for (long i = 0; i < n; i++) {
    const double t = u[i];
    // GPT-2's tanh approximation of GELU (gelu_new), as the ref backend computes
    const double gw = 0.5 * t * (1 + std::tanh(0.7978845608028654 * (t + 0.044715 * t * t * t)));
    const double sw = t / (1 + std::exp(-t));
    if (std::fabs(g[i] - gw) > 2e-6 * (1 + std::fabs(gw)) || std::fabs(s[i] - sw) > 2e-6 * (1 + std::fabs(sw))) {
      char m[160];
      std::snprintf(m, sizeof m, "gelu/silu at x = %.7g: %.9g / %.9g, want %.9g / %.9g", t, g[i], s[i], gw, sw);
      fail(m);
      return;
    }
  }
}

}  // namespace

int main() {
  if (*gemm_isa_error()) {
    std::printf("refused: %s\n", gemm_isa_error());
    return 2;
  }
  std::printf("isa %s\n", gemm_isa());
  std::printf("supported");
  for (const std::string& l : gemm_supported_isas()) std::printf(" %s", l.c_str());
  std::printf("\n");

  // {batch, M, N, K}: edges of every ISA's tiles and blocks
  const int sizes[][4] = {
      {1, 1, 1, 1},      {1, 1, 17, 9},    {1, 3, 5, 7},      {1, 7, 13, 5},     {1, 8, 12, 256},
      {1, 9, 25, 257},   {1, 13, 33, 100}, {1, 17, 37, 300},  {1, 24, 48, 64},   {1, 33, 50, 513},
      {1, 50, 8, 300},   {1, 61, 5, 70},   {1, 4, 40, 70},    {1, 8, 300, 100},  {1, 20, 16, 300},
      {1, 150, 30, 300}, {1, 300, 29, 40}, {1, 9, 3100, 20}, {3, 11, 19, 23},   {4, 16, 24, 33},
  };
  uint64_t seed = 1;
  for (const auto& s : sizes)
    for (int t = 0; t < 4; t++)
      for (int bt = B_F32; bt <= B_F16; bt++) {
        const bool tA = t & 1, tB = t & 2;
        if (bt != B_F32 && tA) continue;  // a 16-bit weight only ever meets x, not xᵀ (autograd ops.ts)
        for (int acc = 0; acc < 2; acc++) {
          // the big shapes once per transpose and type, overwrite only: qemu runs them slowly
          if (acc && (long)s[1] * s[2] * s[3] > 2000000) continue;
          check_gemm({s[0], s[1], s[2], s[3], tA, tB, (bool)acc, bt, false}, seed++);
          if (s[0] > 1) check_gemm({s[0], s[1], s[2], s[3], tA, tB, (bool)acc, bt, true}, seed++);
        }
      }
  // attention's shapes: Tq = Tk (training), Tq < Tk (a cached prefix), head dims 32 and 64, odd lengths
  const int tri_sizes[][3] = {{1, 1, 8}, {7, 7, 32}, {13, 20, 64}, {40, 40, 32}, {37, 300, 64}, {200, 200, 64}};
  for (const auto& t : tri_sizes)
    for (Tri tri : {TRI_N, TRI_K_LOWER, TRI_K_UPPER}) check_tri(tri, t[0], t[1], t[2], seed++);
  check_elementwise();
  if (failures) {
    std::printf("FAILED %d of %d checks\n", failures, checks);
    return 1;
  }
  std::printf("ok %d checks\n", checks);
  return 0;
}
