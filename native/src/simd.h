// Helpers for loops the compiler vectorizes: per-function CPU dispatch, and exp without libm calls.
#pragma once
#include <cstdint>
#include <cstring>

// Loops marked SIMD are vectorized (with -fopenmp-simd; no OpenMP runtime is used).
#define SIMD _Pragma("omp simd")

namespace lora {
// The vector level the element-wise loops run at: 2 AVX-512, 1 AVX2, 0 baseline. It follows the GEMM's
// ISA (gemm.cc: the CPU's best, or the one LORA_ISA forces), so one variable selects every native kernel.
int simd_level();
}  // namespace lora

// LORA_MULTI(ret, name, (params), (args)) { body }: the loop is compiled three times, for AVX-512, AVX2
// and baseline (the body is inlined into three wrappers with their own target), and name() picks one by
// simd_level() on each call. GCC's target_clones did the same by CPU alone, at load time, which left no
// way to run (and test) the AVX2 or baseline loops on a newer CPU.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define LORA_MULTI(ret, name, params, args)                                                            \
  static inline __attribute__((always_inline)) ret name##_body params;                                \
  __attribute__((target("avx512f"))) static ret name##_avx512 params { return name##_body args; }      \
  __attribute__((target("avx2"))) static ret name##_avx2 params { return name##_body args; }           \
  static ret name##_base params { return name##_body args; }                                          \
  ret name params {                                                                                   \
    const int level = ::lora::simd_level();                                                           \
    return level >= 2 ? name##_avx512 args : level == 1 ? name##_avx2 args : name##_base args;          \
  }                                                                                                   \
  static inline __attribute__((always_inline)) ret name##_body params
#else
#define LORA_MULTI(ret, name, params, args) ret name params
#endif

namespace lora {

// 8 floats in one vector (GCC's vector extension), for kernels that fix their own summation order; loads
// through it need no alignment
typedef float v8f __attribute__((vector_size(32), aligned(4)));

// exp(x) in f32 to about 1 ulp, branch-free so loops vectorize: 2^n * p(r), r = x - n ln2 (Cody-Waite).
// Below -87 it gives 0 (below 2^-125, far under any tolerance), above 88.7 +inf; NaN stays NaN.

static inline float vexp(float x) {
  float xc = x < -87.3f ? -87.3f : x;  // ternaries, not fminf: those vectorize without -ffast-math
  xc = xc > 88.7f ? 88.7f : xc;
  // round to nearest (even) by adding and removing 1.5 * 2^23: vectorizes where roundevenf does not
  float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  int32_t e = ((int32_t)n + 126) << 23;  // 2^(n-1), then * 2: n = 128 stays finite
  float y = p * __builtin_bit_cast(float, e) * 2.0f;
  y = x < -87.3f ? 0.0f : y;
  y = x > 88.7f ? __builtin_inff() : y;
  return x != x ? x : y;
}

// tanh(x) in f32, branch-free: the odd Taylor polynomial to x^9 where |x| < 0.25 (relative error under
// 1e-8 there), else sign(x) (1 - 2 / (exp(2|x|) + 1)), which saturates to +-1; NaN stays NaN.
static inline float vtanh(float x) {
  float a = x < 0.0f ? -x : x;
  float x2 = x * x;
  float p = 0.021869488536155203f;  // 62/2835
  p = p * x2 - 0.05396825396825397f;
  p = p * x2 + 0.13333333333333333f;
  p = p * x2 - 0.3333333333333333f;
  float small = p * x2 * x + x;
  float big = 1.0f - 2.0f / (vexp(a + a) + 1.0f);
  big = x < 0.0f ? -big : big;
  return a < 0.25f ? small : big;
}

}  // namespace lora
