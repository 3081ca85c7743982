// Elementwise, norm, softmax, rope, embedding, cross-entropy and AdamW kernels. Rows split between threads;
// reductions over rows (dweight, dbias, sumTo) use fixed row blocks summed in order, so results do not
// depend on the thread count.
#include <cmath>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "half.h"
#include "ops.h"
#include "pool.h"
#include "simd.h"

namespace lora {
namespace {

constexpr long GRAIN = 1 << 15;  // elements per thread below which a split costs more than it saves
constexpr long BLOCK = 32;       // rows per partial sum of a row reduction

// fn(r0, r1) over row ranges, split when rows * cost is large enough
template <class F>
void rows(long N, long cost, F fn) {
  long grain = GRAIN / (cost > 0 ? cost : 1);
  parallel_range(N, grain > 0 ? grain : 1, 1, [&](long a, long b) { fn(a, b); });
}

template <class F>
void elems(long n, F fn) {
  parallel_range(n, GRAIN, 16, [&](long a, long b) { fn(a, b); });
}

// Row reductions: fn(block, row) for every row, rows grouped in fixed blocks of BLOCK and split between
// threads by block. Each block sums into its own partial [C]; add_partials then adds them in block order,
// so the result does not depend on the thread count.
long blocks(long N) { return (N + BLOCK - 1) / BLOCK; }

template <class F>
void row_blocks(long N, long C, F fn) {
  parallel_range(blocks(N), GRAIN / (BLOCK * C) + 1, 1, [&](long b0, long b1) {
    for (long blk = b0; blk < b1; blk++)
      for (long n = blk * BLOCK; n < N && n < (blk + 1) * BLOCK; n++) fn(blk, n);
  });
}

// Adds the per-block partials [nb][C] into out[C] in block order.
void add_partials(float* out, const std::vector<float>& part, long nb, long C) {
  for (long b = 0; b < nb; b++)
    for (long c = 0; c < C; c++) out[c] += part[b * C + c];
}

LORA_MULTI(void, scale_loop, (float* out, const float* x, long n, float s), (out, x, n, s)) {
  SIMD
  for (long i = 0; i < n; i++) out[i] = s * x[i];
}

LORA_MULTI(void, add_loop, (float* o, const float* a, long sa, const float* b, long sb, long n), (o, a, sa, b, sb, n)) {
  if (sa == 1 && sb == 1)
    SIMD for (long i = 0; i < n; i++) o[i] = a[i] + b[i];
  else if (sa == 1 && sb == 0)
    SIMD for (long i = 0; i < n; i++) o[i] = a[i] + b[0];
  else
    SIMD for (long i = 0; i < n; i++) o[i] = a[i * sa] + b[i * sb];
}

LORA_MULTI(void, mul_loop, (float* o, const float* a, long sa, const float* b, long sb, long n), (o, a, sa, b, sb, n)) {
  if (sa == 1 && sb == 1)
    SIMD for (long i = 0; i < n; i++) o[i] = a[i] * b[i];
  else if (sa == 1 && sb == 0)
    SIMD for (long i = 0; i < n; i++) o[i] = a[i] * b[0];
  else
    SIMD for (long i = 0; i < n; i++) o[i] = a[i * sa] * b[i * sb];
}

constexpr float GELU_K = 0.7978845608028654f;  // sqrt(2 / pi)

// (map_lanes: the same vector code for every element, so a row's bits do not depend on its place in the batch)
LORA_MULTI(void, gelu_fwd, (float* out, const float* x, long n), (out, x, n)) {
  map_lanes(out, x, n, [](auto v) __attribute__((always_inline)) {
    const auto t = 1.0f - 2.0f / (vexp_of(2.0f * GELU_K * (v + 0.044715f * v * v * v)) + 1.0f);
    return 0.5f * v * (1.0f + t);
  });
}

LORA_MULTI(void, gelu_bwd, (float* dx, const float* dout, const float* x, long n), (dx, dout, x, n)) {
  SIMD
  for (long i = 0; i < n; i++) {
    float v = x[i];
    float t = 1.0f - 2.0f / (vexp(2.0f * GELU_K * (v + 0.044715f * v * v * v)) + 1.0f);
    float dt = (1.0f - t * t) * GELU_K * (1.0f + 3.0f * 0.044715f * v * v);
    dx[i] = dout[i] * (0.5f * (1.0f + t) + 0.5f * v * dt);
  }
}

// (map_lanes, as gelu_fwd)
LORA_MULTI(void, silu_fwd, (float* out, const float* x, long n), (out, x, n)) {
  map_lanes(out, x, n, [](auto v) __attribute__((always_inline)) { return v / (1.0f + vexp_of(-v)); });
}

LORA_MULTI(void, silu_bwd, (float* dx, const float* dout, const float* x, long n), (dx, dout, x, n)) {
  SIMD
  for (long i = 0; i < n; i++) {
    float s = 1.0f / (1.0f + vexp(-x[i]));
    dx[i] = dout[i] * s * (1.0f + x[i] * (1.0f - s));
  }
}

// max of a row; NaN anywhere gives NaN (so a poisoned row is never silently finite)
LORA_MULTI(float, row_max, (const float* x, long n), (x, n)) {
  float m = -__builtin_inff();
  int nan = 0;
#pragma omp simd reduction(max : m) reduction(| : nan)
  for (long i = 0; i < n; i++) {
    m = x[i] > m ? x[i] : m;
    nan |= x[i] != x[i];
  }
  return nan ? __builtin_nanf("") : m;
}

// The sum of 16 lane partials in one fixed tree (8 pairs, then 4, 2, 1): the last step of a sum whose
// order must not depend on the vectorizer (exp_sum, softmax_backward_row)
inline float lane_sum16(float* acc) {
  for (long w = 8; w > 0; w /= 2)
    for (long l = 0; l < w; l++) acc[l] += acc[l + w];
  return acc[0];
}

// out[i] = exp(x[i] - m) (when out is given); returns their sum. The sum runs in 16 lanes, lane l adding
// x[l], x[l + 16], ... in order, then the lanes in one fixed tree: the same bits wherever the row lies
// in memory and at every vector width (an omp simd reduction leaves the order to the vectorizer, which
// may peel for alignment, so a row's sum could change with its address: a prompt's attention row in a
// batched prefill then differed from the same row alone). The last n % 16 values go through the lanes
// too, padded with -inf (whose exp is exactly 0): left to a scalar epilogue they cost more than the rest
// at attention-row lengths (a decode step's rows of 10 to 60 keys spent a third of the attention kernel
// there, on a Xeon with AVX-512).
LORA_MULTI(float, exp_sum, (float* out, const float* x, long n, float m), (out, x, n, m)) {
  float acc[16] = {0}, e[16];
  const long body = n / 16 * 16;
  for (long i = 0; i < body; i += 16) {
    SIMD for (long l = 0; l < 16; l++) e[l] = vexp(x[i + l] - m);
    SIMD for (long l = 0; l < 16; l++) acc[l] += e[l];
    if (out) std::memcpy(out + i, e, sizeof e);
  }
  if (body < n) {
    SIMD for (long l = 0; l < 16; l++) e[l] = vexp((body + l < n ? x[body + l] : -__builtin_inff()) - m);
    SIMD for (long l = 0; l < 16; l++) acc[l] += e[l];
    if (out) std::memcpy(out + body, e, sizeof(float) * (n - body));
  }
  return lane_sum16(acc);
}

// out[i] = exp(x[i] - m) * s: the cross-entropy gradient's softmax in one pass, without exp_sum's sum and
// a second pass over a vocabulary-long row to scale it (at avx2 the same bits as the two passes; at
// avx512 GCC's code for it differs from theirs in the last bits, within every tolerance against ref)
LORA_MULTI(void, exp_scale, (float* out, const float* x, long n, float m, float s), (out, x, n, m, s)) {
  SIMD
  for (long i = 0; i < n; i++) out[i] = vexp(x[i] - m) * s;
}

LORA_MULTI(void, adamw_loop, (float* p, const float* g, float* m, float* v, long n, float b1, float b2, float c1, float c2, float lr, float decay, float eps), (p, g, m, v, n, b1, b2, c1, c2, lr, decay, eps)) {
  SIMD
  for (long i = 0; i < n; i++) {
    float gi = g[i];
    float mi = b1 * m[i] + (1.0f - b1) * gi;
    float vi = b2 * v[i] + (1.0f - b2) * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] - decay * p[i] - lr * (mi * c1) / (std::sqrt(vi * c2) + eps);
  }
}

}  // namespace

LORA_MULTI(void, softmax_row, (float* out, const float* x, long lim, long n, float scale), (out, x, lim, n, scale)) {
  float m = -__builtin_inff();
#pragma omp simd reduction(max : m)
  for (long j = 0; j < lim; j++) {
    out[j] = x[j] * scale;
    m = out[j] > m ? out[j] : m;
  }
  // a NaN is skipped by the max but not by exp: it still turns the whole row into NaN
  float inv = 1.0f / exp_sum(out, out, lim, m);
  SIMD for (long j = 0; j < lim; j++) out[j] *= inv;
  for (long j = lim; j < n; j++) out[j] = 0.0f;
}

LORA_MULTI(void, softmax_backward_row, (float* ds, const float* dp, const float* p, long lim, long n, float scale), (ds, dp, p, lim, n, scale)) {
  // the dot in 16 fixed lanes, as exp_sum's sum: the same bits wherever the row lies
  float acc[16] = {0};
  const long body = lim / 16 * 16;
  for (long j = 0; j < body; j += 16) SIMD for (long l = 0; l < 16; l++) acc[l] += dp[j + l] * p[j + l];
  for (long l = 0; body + l < lim; l++) acc[l] += dp[body + l] * p[body + l];
  const float dot = lane_sum16(acc);
  SIMD for (long j = 0; j < lim; j++) ds[j] = p[j] * (dp[j] - dot) * scale;
  for (long j = lim; j < n; j++) ds[j] = 0.0f;
}

void scale(float* out, const float* x, long n, float s) {
  elems(n, [&](long a, long b) { scale_loop(out + a, x + a, b - a, s); });
}

void binary(bool mul, float* out, const float* a, const float* b, int nd, const long* shape, const long* as,
            const long* bs) {
  long total = 1;
  for (int d = 0; d < nd; d++) total *= shape[d];
  if (total == 0) return;
  // collapse the trailing dims both operands read contiguously (or broadcast) into one long row
  int split = nd - 1;
  long inner = nd > 0 ? shape[nd - 1] : 1;
  long sa = nd > 0 ? as[nd - 1] : 0, sb = nd > 0 ? bs[nd - 1] : 0;
  for (; split > 0; split--) {
    long d = split - 1;
    bool a_ok = (sa == 1 && as[d] == inner) || (sa == 0 && as[d] == 0);
    bool b_ok = (sb == 1 && bs[d] == inner) || (sb == 0 && bs[d] == 0);
    if (!a_ok || !b_ok || (sa == 0 && sb == 0)) break;
    inner *= shape[d];
  }
  nd = split + 1;  // dims [0, split) stay outer; the collapsed run is the last "dim"
  long outer = total / inner;
  rows(outer, inner, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) {
      long ia = 0, ib = 0, rem = r;
      for (int d = nd - 2; d >= 0; d--) {
        long i = rem % shape[d];
        rem /= shape[d];
        ia += i * as[d];
        ib += i * bs[d];
      }
      if (mul)
        mul_loop(out + r * inner, a + ia, sa, b + ib, sb, inner);
      else
        add_loop(out + r * inner, a + ia, sa, b + ib, sb, inner);
    }
  });
}

void sum_to(float* out, long outLen, const float* g, int nd, const long* shape, const long* os) {
  std::memset(out, 0, sizeof(float) * outLen);
  long total = 1;
  for (int d = 0; d < nd; d++) total *= shape[d];
  if (total == 0) return;
  long inner = nd > 0 ? shape[nd - 1] : 1;
  long so = nd > 0 ? os[nd - 1] : 0;
  long outer = total / inner;
  auto offset = [&](long r) {
    long io = 0, rem = r;
    for (int d = nd - 2; d >= 0; d--) {
      io += (rem % shape[d]) * os[d];
      rem /= shape[d];
    }
    return io;
  };
  // the common case, a bias gradient: rows [outer, inner] summed into [inner]; fixed blocks of rows
  bool rowsum = so == 1 && outLen == inner;
  for (int d = 0; d < nd - 1 && rowsum; d++) rowsum = os[d] == 0;
  if (rowsum) {
    long nb = blocks(outer);
    std::vector<float> part(nb * inner, 0.0f);
    row_blocks(outer, inner, [&](long blk, long r) {
      float* p = part.data() + blk * inner;
      for (long c = 0; c < inner; c++) p[c] += g[r * inner + c];
    });
    add_partials(out, part, nb, inner);
    return;
  }
  for (long r = 0; r < outer; r++) {
    float* o = out + offset(r);
    const float* gr = g + r * inner;
    if (so == 0) {
      float s = 0;
      for (long c = 0; c < inner; c++) s += gr[c];
      o[0] += s;
    } else {
      for (long c = 0; c < inner; c++) o[c * so] += gr[c];
    }
  }
}

void slice(float* out, const float* x, long R, long C, long start, long len) {
  rows(R, len, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) std::memcpy(out + r * len, x + r * C + start, sizeof(float) * len);
  });
}

void slice_backward(float* dx, const float* dout, long R, long C, long start, long len) {
  rows(R, len, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) add_loop(dx + r * C + start, dx + r * C + start, 1, dout + r * len, 1, len);
  });
}

void embedding_forward(float* out, const void* weight, int bt, const int32_t* ids, long N, long C) {
  rows(N, C, [&](long r0, long r1) {
    for (long n = r0; n < r1; n++) {
      long row = (long)ids[n] * C;
      if (bt == B_F32) {
        std::memcpy(out + n * C, (const float*)weight + row, sizeof(float) * C);
      } else {
        const uint16_t* h = (const uint16_t*)weight + row;
        float* o = out + n * C;
        if (bt == B_BF16)
          for (long c = 0; c < C; c++) o[c] = bf16_to_f32(h[c]);
        else
          for (long c = 0; c < C; c++) o[c] = f16_to_f32(h[c]);
      }
    }
  });
}

void embedding_backward(float* dweight, const float* dout, const int32_t* ids, long N, long C) {
  // rows may repeat: split by columns, each thread walks every n in order
  parallel_range(C, GRAIN / (N > 0 ? N : 1) + 16, 16, [&](long c0, long c1) {
    for (long n = 0; n < N; n++) {
      float* d = dweight + (long)ids[n] * C;
      const float* g = dout + n * C;
      for (long c = c0; c < c1; c++) d[c] += g[c];
    }
  });
}

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, long N,
                       long C, float eps) {
  if (N <= 0 || C <= 0) return;
  rows(N, C, [&](long r0, long r1) {
    for (long n = r0; n < r1; n++) {
      const float* xr = x + n * C;
      double m = 0;
      for (long c = 0; c < C; c++) m += xr[c];
      m /= C;
      double v = 0;
      for (long c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
      float s = (float)(1.0 / std::sqrt(v / C + eps));
      float mf = (float)m;
      float* o = out + n * C;
      for (long c = 0; c < C; c++) o[c] = (xr[c] - mf) * s * w[c] + b[c];
      mean[n] = mf;
      rstd[n] = s;
    }
  });
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, long N, long C) {
  if (N <= 0 || C <= 0) return;
  long nb = blocks(N);
  std::vector<float> pw(dw ? nb * C : 0, 0.0f), pb(db ? nb * C : 0, 0.0f);
  row_blocks(N, C, [&](long blk, long n) {
    const float* xr = x + n * C;
    const float* g = dout + n * C;
    float m = mean[n], s = rstd[n];
    float dm = 0, dmx = 0;
    for (long c = 0; c < C; c++) {
      float xhat = (xr[c] - m) * s;
      float dn = g[c] * w[c];
      dm += dn;
      dmx += dn * xhat;
    }
    if (dw)
      for (long c = 0; c < C; c++) pw[blk * C + c] += g[c] * (xr[c] - m) * s;
    if (db)
      for (long c = 0; c < C; c++) pb[blk * C + c] += g[c];
    dm /= C;
    dmx /= C;
    if (dx)
      for (long c = 0; c < C; c++) dx[n * C + c] = s * (g[c] * w[c] - dm - (xr[c] - m) * s * dmx);
  });
  if (dw) add_partials(dw, pw, nb, C);
  if (db) add_partials(db, pb, nb, C);
}

void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, long N, long C, float eps) {
  if (N <= 0 || C <= 0) return;
  rows(N, C, [&](long r0, long r1) {
    for (long n = r0; n < r1; n++) {
      const float* xr = x + n * C;
      double ss = 0;
      for (long c = 0; c < C; c++) ss += (double)xr[c] * xr[c];
      float s = (float)(1.0 / std::sqrt(ss / C + eps));
      for (long c = 0; c < C; c++) out[n * C + c] = xr[c] * s * w[c];
      rstd[n] = s;
    }
  });
}

void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      long N, long C) {
  if (N <= 0 || C <= 0) return;
  long nb = blocks(N);
  std::vector<float> pw(dw ? nb * C : 0, 0.0f);
  row_blocks(N, C, [&](long blk, long n) {
    const float* xr = x + n * C;
    const float* g = dout + n * C;
    float s = rstd[n], dmx = 0;
    for (long c = 0; c < C; c++) dmx += g[c] * w[c] * xr[c] * s;
    if (dw)
      for (long c = 0; c < C; c++) pw[blk * C + c] += g[c] * xr[c] * s;
    dmx /= C;
    if (dx)
      for (long c = 0; c < C; c++) dx[n * C + c] = s * (g[c] * w[c] - xr[c] * s * dmx);
  });
  if (dw) add_partials(dw, pw, nb, C);
}

void gelu_forward(float* out, const float* x, long n) {
  elems(n, [&](long a, long b) { gelu_fwd(out + a, x + a, b - a); });
}
void gelu_backward(float* dx, const float* dout, const float* x, long n) {
  elems(n, [&](long a, long b) { gelu_bwd(dx + a, dout + a, x + a, b - a); });
}
void silu_forward(float* out, const float* x, long n) {
  elems(n, [&](long a, long b) { silu_fwd(out + a, x + a, b - a); });
}
void silu_backward(float* dx, const float* dout, const float* x, long n) {
  elems(n, [&](long a, long b) { silu_bwd(dx + a, dout + a, x + a, b - a); });
}

LORA_MULTI(void, softcap_fwd, (float* out, const float* x, long n, float cap), (out, x, n, cap)) {
  const float inv = 1.0f / cap;
  SIMD for (long i = 0; i < n; i++) out[i] = cap * vtanh(x[i] * inv);
}

LORA_MULTI(void, softcap_bwd, (float* dx, const float* dout, const float* y, long n, float cap),
           (dx, dout, y, n, cap)) {
  const float inv = 1.0f / cap;
  SIMD for (long i = 0; i < n; i++) {
    float t = y[i] * inv;
    dx[i] = dout[i] * (1.0f - t * t);
  }
}

void softcap_forward(float* out, const float* x, long n, float cap) {
  elems(n, [&](long a, long b) { softcap_fwd(out + a, x + a, b - a, cap); });
}
void softcap_backward(float* dx, const float* dout, const float* y, long n, float cap) {
  elems(n, [&](long a, long b) { softcap_bwd(dx + a, dout + a, y + a, b - a, cap); });
}

void softmax_forward(float* out, const float* x, long N, long C) {
  if (N <= 0 || C <= 0) return;
  rows(N, C * 4, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) softmax_row(out + r * C, x + r * C, C, C, 1.0f);
  });
}

void softmax_backward(float* dx, const float* dout, const float* y, long N, long C) {
  if (N <= 0 || C <= 0) return;
  rows(N, C, [&](long r0, long r1) {
    for (long r = r0; r < r1; r++) softmax_backward_row(dx + r * C, dout + r * C, y + r * C, C, C, 1.0f);
  });
}

namespace {

// cos and sin of one position's angles pos * freqs[i] (i < half), times scale (sin also times sign)
void rope_angles(double* cs, double* sn, double pos, const double* freqs, long half, double scale, double sign) {
  for (long i = 0; i < half; i++) {
    double angle = pos * freqs[i];
    cs[i] = scale * std::cos(angle);
    sn[i] = sign * scale * std::sin(angle);
  }
}

// one position's H heads (x, out: [H, D]) turned by the angles of cs, sn on their first R dims
void rope_heads(float* out, const float* x, long H, long D, long R, const double* cs, const double* sn) {
  const long half = R / 2;
  for (long h = 0; h < H; h++) {
    const long o = h * D;
    for (long i = 0; i < half; i++) {
      double x1 = x[o + i], x2 = x[o + i + half];
      out[o + i] = (float)(x1 * cs[i] - x2 * sn[i]);
      out[o + i + half] = (float)(x2 * cs[i] + x1 * sn[i]);
    }
    for (long d = R; d < D; d++) out[o + d] = x[o + d];
  }
}

}  // namespace

void rope(float* out, const float* x, long B, long T, long H, long D, long offset, const double* freqs, long R,
          double scale, bool inverse) {
  rows(T, B * H * D * 4, [&](long t0, long t1) {
    std::vector<double> cs(R / 2), sn(R / 2);
    for (long t = t0; t < t1; t++) {
      rope_angles(cs.data(), sn.data(), (double)(offset + t), freqs, R / 2, scale, inverse ? -1.0 : 1.0);
      for (long b = 0; b < B; b++) {
        const long o = (b * T + t) * H * D;
        rope_heads(out + o, x + o, H, D, R, cs.data(), sn.data());
      }
    }
  });
}

// A batched decode's RoPE: x, out [B, H, D], row b at position offsets[b], each row the bits of rope() of
// that row alone (B 1, T 1, offset offsets[b]): the same two steps. On the calling thread: at decode
// sizes a split costs more than the rows (16 rows of stories260K: 1k values).
void rope_rows(float* out, const float* x, long B, long H, long D, const int32_t* offsets, const double* freqs,
               long R, double scale) {
  std::vector<double> cs(R / 2), sn(R / 2);
  for (long b = 0; b < B; b++) {
    rope_angles(cs.data(), sn.data(), (double)offsets[b], freqs, R / 2, scale, 1.0);
    rope_heads(out + b * H * D, x + b * H * D, H, D, R, cs.data(), sn.data());
  }
}

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, long N, long V) {
  if (N <= 0 || V <= 0) return;
  rows(N, V * 4, [&](long r0, long r1) {
    for (long n = r0; n < r1; n++) {
      const float* l = logits + n * V;
      float m = row_max(l, V);
      float s = (float)(m + std::log(exp_sum(nullptr, l, V, m)));
      lse[n] = s;
      int t = targets[n];
      losses[n] = t < 0 ? 0.0f : s - l[t];
    }
  });
}

void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, long N,
                            long V, float scale) {
  if (N <= 0 || V <= 0) return;
  rows(N, V * 4, [&](long r0, long r1) {
    for (long n = r0; n < r1; n++) {
      float* d = dlogits + n * V;
      int t = targets[n];
      if (t < 0) {
        std::memset(d, 0, sizeof(float) * V);
        continue;
      }
      exp_scale(d, logits + n * V, V, lse[n], scale);
      d[t] -= scale;
    }
  });
}

void adamw(float* p, const float* g, float* m, float* v, long n, double lr, double beta1, double beta2, double eps,
           double wd, double step) {
  float c1 = (float)(1.0 / (1.0 - std::pow(beta1, step)));
  float c2 = (float)(1.0 / (1.0 - std::pow(beta2, step)));
  elems(n, [&](long a, long b) {
    adamw_loop(p + a, g + a, m + a, v + a, b - a, (float)beta1, (float)beta2, c1, c2, (float)lr, (float)(lr * wd),
               (float)eps);
  });
}

}  // namespace lora
