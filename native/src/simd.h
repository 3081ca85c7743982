// Helpers for loops the compiler vectorizes: per-function CPU dispatch, and exp without libm calls.
#pragma once
#include <cstdint>
#include <cstring>

// Loops marked SIMD are vectorized (with -fopenmp-simd; no OpenMP runtime is used). They need
// -fno-trapping-math too (binding.gyp): the branch-free selects below (vexp's clamps, NaN and range
// checks) compute both sides, and while a trap counts as observable GCC 12 if-converts such a loop only
// with AVX-512's masked operations, so at AVX2 and baseline it kept the branches and the loop stayed
// scalar (GELU, SiLU, softmax and the cross-entropy rows ran 5-12x slower at LORA_ISA=avx2 than at avx512
// on one Xeon). No FP exception is ever unmasked in Node, so the flag changes no value.
#define SIMD _Pragma("omp simd")

namespace lora {
// The vector level the element-wise loops run at: 2 AVX-512, 1 AVX2, 0 baseline. It follows the GEMM's
// ISA (gemm.cc: the CPU's best, or the one LORA_ISA forces), so one variable selects every native kernel.
int simd_level();
}  // namespace lora

// LORA_MULTI(ret, name, (params), (args)) { body }: the loop is compiled three times, for AVX-512, AVX2
// with FMA (the avx2 level requires it) and baseline (the body is inlined into three wrappers with their
// own target), and name() picks one by simd_level() on each call. GCC's target_clones did the same by
// CPU alone, at load time, which left no way to run (and test) the AVX2 or baseline loops on a newer
// CPU. GCC contracts a * b + c into an FMA where the target has one, so most element-wise results
// (GELU, SiLU, softcap, exp_sum's) are the same bits at avx512 and avx2 and differ in the last bits at
// baseline; not every one is (the cross-entropy gradient's exp_scale differs between the two), and
// nothing relies on agreement between levels: a level's results are checked against ref, and are the
// same bits at any thread count.
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__) && !defined(__clang__)
#define LORA_MULTI(ret, name, params, args)                                                            \
  static inline __attribute__((always_inline)) ret name##_body params;                                \
  __attribute__((target("avx512f"))) static ret name##_avx512 params { return name##_body args; }      \
  __attribute__((target("avx2,fma"))) static ret name##_avx2 params { return name##_body args; }       \
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
// 16 floats: one register at AVX-512 (with its 32 registers). GCC 12 splits a wider vector's arithmetic
// into the target's registers, but not a comparison or a ?: on it, which it turns into scalar code lane by
// lane: kernels with those run on the lanes their level has registers for (map_lanes, v4f at baseline and
// on NEON).
typedef float v16f __attribute__((vector_size(64), aligned(4)));
typedef float v4f __attribute__((vector_size(16), aligned(4)));
// Unaligned loads and stores of a float vector given as a template's parameter, which loses the typedef's
// aligned(4): `*(V*)p` there assumes the vector's own alignment (vmovaps, a fault on a float array).
template <class V>
__attribute__((always_inline)) inline V loadu(const float* p) {
  V v;
  __builtin_memcpy(&v, p, sizeof v);
  return v;
}
template <class V>
__attribute__((always_inline)) inline void storeu(float* p, V v) {
  __builtin_memcpy(p, &v, sizeof v);
}
// the int vector of a float vector's width (GCC takes no vector_size from a template's parameter)
template <class V>
struct ints_of;
template <>
struct ints_of<v4f> {
  typedef int type __attribute__((vector_size(16)));
};
template <>
struct ints_of<v8f> {
  typedef int type __attribute__((vector_size(32)));
};
template <>
struct ints_of<v16f> {
  typedef int type __attribute__((vector_size(64)));
};

// The lane sums of 8 accumulators at once: lane j of the result is a[j]'s 8 lanes added in one fixed tree,
// ((l0 + l1) + (l2 + l3)) + ((l4 + l5) + (l6 + l7)), as a transpose-and-add (7 vector adds, 14 shuffles
// for 8 sums; a horizontal sum per accumulator cost about as much as its products at short depths)
__attribute__((always_inline)) inline v8f sum8x8(const v8f* a) {
  typedef int v8i __attribute__((vector_size(32)));
  const auto pairs = [](v8f p, v8f q, v8i lo, v8i hi) {
    return __builtin_shuffle(p, q, lo) + __builtin_shuffle(p, q, hi);
  };
  const v8i e1 = {0, 8, 2, 10, 4, 12, 6, 14}, o1 = {1, 9, 3, 11, 5, 13, 7, 15};
  const v8i e2 = {0, 1, 8, 9, 4, 5, 12, 13}, o2 = {2, 3, 10, 11, 6, 7, 14, 15};
  const v8i e3 = {0, 1, 2, 3, 8, 9, 10, 11}, o3 = {4, 5, 6, 7, 12, 13, 14, 15};
  const v8f u0 = pairs(a[0], a[1], e1, o1), u1 = pairs(a[2], a[3], e1, o1);
  const v8f u2 = pairs(a[4], a[5], e1, o1), u3 = pairs(a[6], a[7], e1, o1);
  return pairs(pairs(u0, u1, e2, o2), pairs(u2, u3, e2, o2), e3, o3);
}

// exp(x) in f32 to about 1 ulp, branch-free so loops vectorize: 2^n * p(r), r = x - n ln2 (Cody-Waite).
// Below -87 it gives 0 (below 2^-125, far under any tolerance), above 88.7 +inf; NaN stays NaN.

// 2^(n-1) for integral n, on a float or lane by lane on a vector: the exponent bits built directly
__attribute__((always_inline)) inline float pow2_less1(float n) {
  return __builtin_bit_cast(float, ((int32_t)n + 126) << 23);
}
template <class V>
__attribute__((always_inline)) inline V pow2_less1(V n) {
  return (V)((__builtin_convertvector(n, typename ints_of<V>::type) + 126) << 23);
}

// vexp's operations on a float (vexp) or lane by lane on a vector (vexp_of, for kernels that fix their own
// vector code)
template <class F>
__attribute__((always_inline)) inline F vexp_of(F x) {
  const F lo = F{} - 87.3f, hi = F{} + 88.7f;
  F xc = x < lo ? lo : x;  // ternaries, not fminf: those vectorize without -ffast-math
  xc = xc > hi ? hi : xc;
  // round to nearest (even) by adding and removing 1.5 * 2^23: vectorizes where roundevenf does not
  const F n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  F r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  F p = F{} + 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  F y = p * pow2_less1(n) * 2.0f;  // 2^(n-1), then * 2: n = 128 stays finite
  y = x < lo ? F{} : y;
  y = x > hi ? F{} + __builtin_inff() : y;
  return x != x ? x : y;
}

static inline float vexp(float x) { return vexp_of(x); }

// out[i] = f(x[i]) for i < n, f taking and giving L lanes (V): the last partial block through a padded
// buffer, so every element takes the same vector code wherever it lies in the tensor, and a row's bits do
// not depend on the rows around it (a batched decode's invariance). A `SIMD for` loop left the remainder
// to the vectorizer's epilogue, whose scalar code contracted differently: silu at AVX-512 differed in the
// last bit for about 1 in 7,000 of the elements past the last full vector (a Xeon, GCC 12).
template <class V, int L, class F>
__attribute__((always_inline)) inline void map_n(float* out, const float* x, long n, F f) {
  long i = 0;
  for (; i + L <= n; i += L) storeu(out + i, f(loadu<V>(x + i)));
  if (i == n) return;
  float pad[L];
  for (long j = 0; j < L; j++) pad[j] = i + j < n ? x[i + j] : 0.0f;
  storeu(pad, f(loadu<V>(pad)));
  for (long j = 0; i + j < n; j++) out[i + j] = pad[j];
}

// f(V{}) for the float vector of this process's level (one level per process, so a row's bits still depend
// on that row alone): 16 lanes at AVX-512, 8 at AVX2, 4 at baseline and on NEON. On 16 lanes everywhere,
// GCC 12 ran vexp_of's ?: lane by lane in scalar code at AVX2: SiLU and GELU forward took 2.3 ms for
// [256, 3072] against 0.3 at AVX-512 (Zen 5, one thread). f takes the vector as a tag (`auto`, always
// inlined, so no wide vector is ever passed by value between targets).
template <class F>
__attribute__((always_inline)) inline void on_level_lanes(F f) {
  const int level = simd_level();
  if (level >= 2)
    f(v16f{});
  else if (level == 1)
    f(v8f{});
  else
    f(v4f{});
}

// map_n on the lanes of this process's level, f generic over the vector type
template <class F>
__attribute__((always_inline)) inline void map_lanes(float* out, const float* x, long n, F f) {
  on_level_lanes([&](auto tag) __attribute__((always_inline)) {
    using V = decltype(tag);
    map_n<V, sizeof(V) / sizeof(float)>(out, x, n, f);
  });
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
