// Standalone GEMM benchmark: our gemm() against OpenBLAS cblas_sgemm (dlopen'd), in one process,
// interleaved (ours, OpenBLAS, ours, ...), best of R repetitions each, so both see the same machine load.
// Not part of the addon. Build and run (from native/):
//   g++ -O3 -std=c++17 -fno-math-errno -fno-trapping-math -fopenmp-simd -pthread bench/gemm_bench.cc src/gemm.cc src/pool.cc
//       -ldl -o /tmp/gemm_bench && OPENBLAS_THREAD_TIMEOUT=4 /tmp/gemm_bench [threads...]
// OPENBLAS_THREAD_TIMEOUT=4 makes OpenBLAS's idle workers sleep at once, so they do not steal a core
// from our pool while ours is being timed. LORA_ISA picks our level; "% peak" is our rate over one core's
// FMA peak at that level (measured first, see fma_peak) times the threads.
#include <dlfcn.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstdint>
#include <cstring>
#include <string>
#include <algorithm>
#include <vector>

#include "../src/gemm.h"
#include "../src/pool.h"

using namespace lora;

// f32 -> f16 bits (truncating; fine for timing)
uint16_t f32_to_f16_bits(float f) {
  uint32_t x;
  std::memcpy(&x, &f, 4);
  uint32_t s = (x >> 16) & 0x8000, e = (x >> 23) & 0xff, m = (x >> 13) & 0x3ff;
  if (e < 113) return (uint16_t)s;
  if (e > 142) return (uint16_t)(s | 0x7c00);
  return (uint16_t)(s | ((e - 112) << 10) | m);
}

typedef void (*sgemm_t)(int, int, int, int, int, int, float, const float*, int, const float*, int, float, float*,
                        int);
typedef void (*setthr_t)(int);

struct Shape {
  const char* model;
  int batch, M, K, N;
  bool tA, tB, acc;
};

// the GEMMs of the benchmark's two training steps (npm run bench's GEMM table)
const Shape SHAPES[] = {
    {"a", 1, 256, 768, 3072, false, true, false},  {"a", 1, 256, 3072, 768, false, true, false},
    {"a", 1, 256, 768, 3072, false, false, false}, {"a", 1, 256, 3072, 768, false, false, false},
    {"a", 1, 256, 768, 2304, false, true, false},  {"a", 1, 256, 2304, 768, false, false, false},
    {"a", 1, 128, 768, 50257, false, true, false}, {"a", 1, 128, 50257, 768, false, false, false},
    {"a", 1, 256, 768, 768, false, true, false},   {"a", 1, 256, 768, 768, false, false, false},
    {"a", 1, 256, 8, 2304, false, true, false},    {"a", 1, 256, 2304, 8, false, false, false},
    {"a", 1, 2304, 256, 8, true, false, true},     {"a", 1, 256, 768, 8, false, true, false},
    {"a", 1, 8, 256, 768, true, false, true},      {"a", 1, 256, 8, 768, false, false, false},
    {"b", 1, 1020, 256, 8192, false, true, false}, {"b", 1, 1020, 8192, 256, false, false, false},
    {"b", 1, 2048, 256, 688, false, true, false},  {"b", 8, 256, 688, 256, false, false, false},
    {"b", 1, 2048, 256, 256, false, true, false},  {"b", 8, 256, 256, 256, false, false, false},
    {"b", 1, 2048, 688, 256, false, true, false},  {"b", 8, 256, 256, 688, false, false, false},
    {"b", 1, 2048, 256, 8, false, true, false},    {"b", 1, 2048, 8, 256, false, true, false},
    {"b", 8, 256, 256, 8, false, false, false},    {"b", 1, 256, 2048, 8, true, false, true},
    {"b", 1, 8, 2048, 256, true, false, true},     {"b", 8, 256, 8, 256, false, false, false},
};

#if defined(__x86_64__)
#include <immintrin.h>
// One core's f32 FMA peak at an ISA level: 12 independent FMA chains (more than the FMA latency times
// the FMA pipes on any of these cores), so the pipes, not the latency, set the rate. The "% peak" column
// divides by this times the thread count.
const long PEAK_ROUNDS = 50000000;
#define FMA_PEAK(name, tgt, V, set1, fmadd, lanes)                          \
  __attribute__((target(tgt))) double name() {                             \
    V a[12];                                                               \
    for (int i = 0; i < 12; i++) a[i] = set1((float)i);                    \
    const V b = set1(1.0000001f), c = set1(1e-7f);                         \
    auto t0 = std::chrono::steady_clock::now();                            \
    for (long r = 0; r < PEAK_ROUNDS; r++)                                 \
      for (int i = 0; i < 12; i++) a[i] = fmadd(a[i], b, c);               \
    double sec = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); \
    volatile float sink = 0;                                               \
    for (int i = 0; i < 12; i++) sink = sink + a[i][0];                    \
    return 2.0 * lanes * 12 * PEAK_ROUNDS / sec / 1e9;                     \
  }
FMA_PEAK(fma_peak_avx512, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, 16)
FMA_PEAK(fma_peak_avx2, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, 8)
// GFLOP/s of one core at the level gemm() runs (0: the portable level, no fixed vector width)
double fma_peak() {
  const std::string isa = gemm_isa();
  if (isa.rfind("avx512", 0) == 0) return fma_peak_avx512();
  if (isa == "avx2") return fma_peak_avx2();
  return 0;
}
#else
double fma_peak() { return 0; }
#endif

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// seconds per call: best of `reps` rounds of calls lasting >= 30 ms each
template <class F>
double best(F f, int reps) {
  double b = 1e30;
  for (int r = 0; r < reps; r++) {
    int n = 0;
    double t0 = now(), t;
    do {
      f();
      n++;
      t = now() - t0;
    } while (t < 0.03);
    b = std::min(b, t / n);
  }
  return b;
}

int main(int argc, char** argv) {
  void* h = dlopen("libopenblas.so.0", RTLD_NOW);
  sgemm_t sgemm = h ? (sgemm_t)dlsym(h, "cblas_sgemm") : nullptr;
  setthr_t setthr = h ? (setthr_t)dlsym(h, "openblas_set_num_threads") : nullptr;
  if (!sgemm) std::printf("no OpenBLAS (libopenblas.so.0): ours only\n");
  std::vector<int> threads;
  for (int i = 1; i < argc; i++) threads.push_back(std::atoi(argv[i]));
  if (threads.empty()) threads = {1, 2};
  const char* only = std::getenv("SHAPES");  // e.g. SHAPES=0,1,2
  const double peak = fma_peak();
  std::printf("isa %s, one core's FMA peak at it %.1f GFLOP/s (0: not measured)\n| model | shape | thr | ours GFLOP/s | OpenBLAS GFLOP/s | ours/OpenBLAS | ours %% peak | max rel err |\n|---|---|---|---|---|---|---|---|\n",
              gemm_isa(), peak);
  int idx = -1;
  for (const Shape& s : SHAPES) {
    idx++;
    if (only) {
      char key[16];
      std::snprintf(key, sizeof key, ",%d,", idx);
      std::string o = std::string(",") + only + ",";
      if (o.find(key) == std::string::npos) continue;
    }
    const int M = s.M, K = s.K, N = s.N, nb = s.batch;
    std::vector<float> A((size_t)nb * M * K), B((size_t)K * N), C((size_t)nb * M * N), R((size_t)nb * M * N);
    for (size_t i = 0; i < A.size(); i++) A[i] = std::sin(i * 0.37f) * 0.5f;
    for (size_t i = 0; i < B.size(); i++) B[i] = std::cos(i * 0.11f) * 0.5f;
    GemmArgs g;
    g.batch = nb;
    g.M = M;
    g.N = N;
    g.K = K;
    g.A = A.data();
    g.rsA = s.tA ? 1 : K;
    g.csA = s.tA ? M : 1;
    g.strideA = (long)M * K;
    // BTYPE=1 (bf16) or 2 (f16): B as 16-bit weights (OpenBLAS still gets the f32 B)
    const int btype = std::getenv("BTYPE") ? std::atoi(std::getenv("BTYPE")) : B_F32;
    std::vector<uint16_t> B16(B.size());
    for (size_t i = 0; i < B.size(); i++) {
      uint32_t x;
      std::memcpy(&x, &B[i], 4);
      B16[i] = btype == B_BF16 ? (uint16_t)(x >> 16) : f32_to_f16_bits(B[i]);
    }
    g.B = btype == B_F32 ? (const void*)B.data() : (const void*)B16.data();
    g.btype = btype;
    g.rsB = s.tB ? 1 : N;
    g.csB = s.tB ? K : 1;
    g.strideB = 0;
    g.C = C.data();
    g.ldc = N;
    g.strideC = (long)M * N;
    g.accumulate = s.acc;
    // OpenBLAS: a shared B with a contiguous batch of A is one [batch*M, K] product (as torch.matmul does)
    const bool fold = nb > 1 && !s.tA;
    auto blas = [&]() {
      if (fold)
        sgemm(101, 111, s.tB ? 112 : 111, nb * M, N, K, 1.0f, A.data(), K, B.data(), s.tB ? K : N, s.acc ? 1.0f : 0.0f,
              R.data(), N);
      else
        for (int b = 0; b < nb; b++)
          sgemm(101, s.tA ? 112 : 111, s.tB ? 112 : 111, M, N, K, 1.0f, A.data() + (size_t)b * M * K, s.tA ? M : K,
                B.data(), s.tB ? K : N, s.acc ? 1.0f : 0.0f, R.data() + (size_t)b * M * N, N);
    };
    for (int t : threads) {
      set_threads(t);
      if (setthr) setthr(t);
      double flop = 2.0 * nb * M * N * K;
      int reps = 5;
      double ours = 1e30, ob = 1e30;
      for (int r = 0; r < reps; r++) {
        ours = std::min(ours, best([&] { gemm(g); }, 1));
        if (sgemm) ob = std::min(ob, best(blas, 1));
      }
      double err = 0;
      if (sgemm) {
        std::fill(C.begin(), C.end(), 0.f);
        std::fill(R.begin(), R.end(), 0.f);
        gemm(g);
        blas();
        for (size_t i = 0; i < C.size(); i++) err = std::max(err, (double)std::fabs(C[i] - R[i]) / (1.0 + std::fabs(R[i])));
      }
      char name[80];
      std::snprintf(name, sizeof name, "%s%dx%d @ %dx%d %s%s%s", nb > 1 ? (std::to_string(nb) + "x ").c_str() : "", M,
                    K, K, N, s.tA ? "T" : "N", s.tB ? "T" : "N", s.acc ? "+" : "");
      char share[16] = "n/a";  // the portable level has no fixed vector width to measure a peak at
      if (peak > 0) std::snprintf(share, sizeof share, "%.0f%%", 100 * flop / ours / 1e9 / (peak * t));
      std::printf("| %s | %s | %d | %.1f | %.1f | %.2f | %s | %.1e |\n", s.model, name, t, flop / ours / 1e9,
                  sgemm ? flop / ob / 1e9 : 0.0, sgemm ? ob / ours : 0.0, share, err);
      std::fflush(stdout);
    }
  }
}
