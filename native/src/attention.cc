// Causal grouped-query attention through the GEMM, one (batch, kv-head) group per task so that dk and dv
// (shared by the group's query heads) are written by one thread only.
// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D]; att: [B, Hq, Tq, Tk] probabilities.
// A soft cap (Gemma's attn_logit_softcapping) turns each scaled score s into cap tanh(s / cap) first.
#include <cmath>
#include <cstring>
#include <vector>

#include "gemm.h"
#include "ops.h"
#include "pool.h"
#include "simd.h"

namespace lora {
namespace {

thread_local std::vector<float> scratch;

// the keys query row i sees: [start_of, limit_of)
long limit_of(const AttnDims& d, long i) { return d.causal ? d.Tk - d.Tq + i + 1 : d.Tk; }
long start_of(const AttnDims& d, long i) {
  long p = d.Tk - d.Tq + i;
  return d.causal && d.window > 0 && p - d.window + 1 > 0 ? p - d.window + 1 : 0;
}

// the soft cap of n raw scores in place: row = cap tanh(scale * row / cap)
LORA_MULTI(void, cap_row, (float* row, long n, float scale, float cap), (row, n, scale, cap)) {
  const float inv = 1.0f / cap;
  SIMD for (long j = 0; j < n; j++) row[j] = cap * vtanh(row[j] * scale * inv);
}

// ds *= (1 - tanh^2(scale * s / cap)) * scale over n entries, s the raw scores recomputed as the forward
// pass computed them
LORA_MULTI(void, cap_grad_row, (float* ds, const float* s, long n, float scale, float cap),
           (ds, s, n, scale, cap)) {
  const float inv = 1.0f / cap;
  SIMD for (long j = 0; j < n; j++) {
    float t = vtanh(s[j] * scale * inv);
    ds[j] *= (1.0f - t * t) * scale;
  }
}

// The grain of a split of n (batch item, kv head) groups between threads for `work` multiply-adds in
// all: one group, or all of them (on the calling thread) below 2^17. At decode sizes (16 rows of
// stories260K, about 70k) handing half to a worker cost more than it saved (bench:serve at 16 clients:
// 5.9k -> 6.8k tok/s on a 2-core Xeon; the worker's wake-up and the cores the server's own clients need).
long group_grain(double work, long n) { return work >= 2.0 * (1 << 16) ? 1 : n; }

// for every (b, kv head): fn(b, hk), split between threads by group when there is enough work
template <class F>
void groups(const AttnDims& d, F fn) {
  const double work = (double)d.B * d.Hq * d.Tq * d.Tk * d.D * 2;
  parallel_range(d.B * d.Hkv, group_grain(work, d.B * d.Hkv), 1, [&](long g0, long g1) {
    for (long g = g0; g < g1; g++) fn(g / d.Hkv, g % d.Hkv);
  });
}

// Decode-step pieces (Tq 1) over a head dim D: with D % 8 == 0 (every model's head dim here) they run on
// 8-lane vectors, else on scalars. Each output's f32 operations come in one fixed order whatever the
// batch, the thread split or the other heads, so a row's bits depend on that row alone.

// s[h * lds + j] = q_h . k_j for heads h < group (q [group, D] contiguous) and keys j < n (k_j = k + j ldk).
// With D % 8 == 0, 8 keys at a time: each key's products summed over the D / 8 chunks in 8 lanes, then
// the lanes by sum8x8, for 8 keys at once (a lane tree per key cost more than its products at D 8). The
// keys past the last 8 take the same code, the block padded with the first key (its extra dots unused).
LORA_MULTI(void, head_scores, (float* s, long lds, const float* q, long group, const float* k, long ldk, long n, long D),
           (s, lds, q, group, k, ldk, n, D)) {
  if (D % 8 != 0) {
    for (long h = 0; h < group; h++)
      for (long j = 0; j < n; j++) {
        float dot = 0.0f;
        for (long e = 0; e < D; e++) dot += q[h * D + e] * k[j * ldk + e];
        s[h * lds + j] = dot;
      }
    return;
  }
  for (long j0 = 0; j0 < n; j0 += 8) {
    const long nj = n - j0 < 8 ? n - j0 : 8;
    const float* kp[8];
    for (long jj = 0; jj < 8; jj++) kp[jj] = k + (j0 + (jj < nj ? jj : 0)) * ldk;
    for (long h = 0; h < group; h++) {
      const float* qh = q + h * D;
      v8f a[8];
      const v8f q0 = *(const v8f*)qh;
      for (int jj = 0; jj < 8; jj++) a[jj] = q0 * *(const v8f*)kp[jj];
      for (long e = 8; e < D; e += 8) {
        const v8f qe = *(const v8f*)(qh + e);
        for (int jj = 0; jj < 8; jj++) a[jj] += qe * *(const v8f*)(kp[jj] + e);
      }
      const v8f d = sum8x8(a);
      for (long jj = 0; jj < nj; jj++) s[h * lds + j0 + jj] = d[jj];
    }
  }
}

// out_h [D] = sum_j p_h[j] v_j over keys [j0, j1) in key order (out_h = out + h D, p_h = p + h lds,
// v_j = v + j ldv), for the heads h < group: with D % 8 == 0, up to 4 heads at a time share each value's
// load (4 independent sums in flight; a head at a time waited on its one accumulator)
LORA_MULTI(void, weighted_values,
           (float* out, const float* p, long lds, long group, const float* v, long ldv, long j0, long j1, long D),
           (out, p, lds, group, v, ldv, j0, j1, D)) {
  if (D % 8 != 0) {
    for (long h = 0; h < group; h++)
      for (long e = 0; e < D; e++) {
        float acc = 0.0f;
        for (long j = j0; j < j1; j++) acc += p[h * lds + j] * v[j * ldv + e];
        out[h * D + e] = acc;
      }
    return;
  }
  for (long h0 = 0; h0 < group; h0 += 4) {
    const long nh = group - h0 < 4 ? group - h0 : 4;
    const float* ph[4];
    for (long hh = 0; hh < 4; hh++) ph[hh] = p + (h0 + (hh < nh ? hh : 0)) * lds;
    for (long e = 0; e < D; e += 8) {
      v8f acc[4] = {};
      for (long j = j0; j < j1; j++) {
        const v8f vj = *(const v8f*)(v + j * ldv + e);
        for (int hh = 0; hh < 4; hh++) acc[hh] += ph[hh][j] * vj;
      }
      for (long hh = 0; hh < nh; hh++) *(v8f*)(out + (h0 + hh) * D + e) = acc[hh];
    }
  }
}

// Every lane the max of v's lanes, by halves (exact in any order).
__attribute__((always_inline)) inline v16f all_max(v16f v) {
  const auto max = [](v16f a, v16f b) { return a > b ? a : b; };
  v = max(v, __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7));
  v = max(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11));
  v = max(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5, 10, 11, 8, 9, 14, 15, 12, 13));
  return max(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 13, 12, 15, 14));
}
__attribute__((always_inline)) inline v8f all_max(v8f v) {
  const auto max = [](v8f a, v8f b) { return a > b ? a : b; };
  v = max(v, __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3));
  v = max(v, __builtin_shufflevector(v, v, 2, 3, 0, 1, 6, 7, 4, 5));
  return max(v, __builtin_shufflevector(v, v, 1, 0, 3, 2, 5, 4, 7, 6));
}
__attribute__((always_inline)) inline v4f all_max(v4f v) {
  const auto max = [](v4f a, v4f b) { return a > b ? a : b; };
  v = max(v, __builtin_shufflevector(v, v, 2, 3, 0, 1));
  return max(v, __builtin_shufflevector(v, v, 1, 0, 3, 2));
}

// The sum of v's lanes in one fixed tree: the halves added lane by lane down to two lanes, then those
// (16 lanes: ((l0 + l8) + (l4 + l12)) + ...).
__attribute__((always_inline)) inline float lane_sum(v16f v) {
  const v16f h8 = v + __builtin_shufflevector(v, v, 8, 9, 10, 11, 12, 13, 14, 15, 0, 1, 2, 3, 4, 5, 6, 7);
  const v16f h4 = h8 + __builtin_shufflevector(h8, h8, 4, 5, 6, 7, 0, 1, 2, 3, 4, 5, 6, 7, 0, 1, 2, 3);
  const v16f h2 = h4 + __builtin_shufflevector(h4, h4, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1, 2, 3, 0, 1);
  return h2[0] + h2[1];
}
__attribute__((always_inline)) inline float lane_sum(v8f v) {
  const v8f h4 = v + __builtin_shufflevector(v, v, 4, 5, 6, 7, 0, 1, 2, 3);
  const v8f h2 = h4 + __builtin_shufflevector(h4, h4, 2, 3, 0, 1, 2, 3, 0, 1);
  return h2[0] + h2[1];
}
__attribute__((always_inline)) inline float lane_sum(v4f v) {
  const v4f h2 = v + __builtin_shufflevector(v, v, 2, 3, 0, 1);
  return h2[0] + h2[1];
}

// A decode row's softmax in place: row [n] = softmax(scale * row) over its first lim entries, 0 after. On
// L lanes (V), the tail block padded (-inf for the max and the exp, whose exp is exactly 0) through a
// small buffer: an 8-lane version that built its tail lane by lane and reduced the lanes with scalar
// chains spent half of a 16-row decode's attention here at 10 to 60 keys (stories260K on a Xeon with
// AVX-512: its 8-lane code had 16 registers for the exp's constants and spilled). The max is exact in any
// order; the sum's lanes go through one fixed tree, so a row's bits depend on that row alone.
template <class V, int L>
__attribute__((always_inline)) inline void softmax_decode_lanes(float* row, long lim, long n, float scale) {
  typename ints_of<V>::type lane;
  for (int j = 0; j < L; j++) lane[j] = j;
  const V ninf = V{} - __builtin_inff();
  const long body = lim / L * L;
  const int rest = (int)(lim - body);
  float pad[L];
  for (int j = 0; j < L; j++) pad[j] = j < rest ? row[body + j] : 0.0f;
  // the padding stays -inf whatever the scale's sign
  V tail = lane < rest ? loadu<V>(pad) * scale : ninf;
  V vm = tail;
  for (long j = 0; j < body; j += L) {
    const V t = loadu<V>(row + j) * scale;
    storeu(row + j, t);
    vm = t > vm ? t : vm;  // whatever a NaN does to the max, exp carries it: the row turns NaN
  }
  vm = all_max(vm);
  V vs = V{};
  for (long j = 0; j < body; j += L) {
    const V e = vexp_of(loadu<V>(row + j) - vm);
    storeu(row + j, e);
    vs += e;
  }
  tail = vexp_of(tail - vm);
  vs += tail;
  const float inv = 1.0f / lane_sum(vs);
  for (long j = 0; j < body; j += L) storeu(row + j, loadu<V>(row + j) * inv);
  storeu(pad, tail * inv);
  for (int j = 0; j < rest; j++) row[body + j] = pad[j];
  for (long j = lim; j < n; j++) row[j] = 0.0f;
}

// on the lanes of this process's level (simd.h's on_level_lanes: 16 lanes at AVX2 ran lane by lane)
LORA_MULTI(void, softmax_decode_row, (float* row, long lim, long n, float scale), (row, lim, n, scale)) {
  on_level_lanes([&](auto tag) __attribute__((always_inline)) {
    using V = decltype(tag);
    softmax_decode_lanes<V, sizeof(V) / sizeof(float)>(row, lim, n, scale);
  });
}

// A decode step's group (Tq 1): its query heads' scores, softmax and weighted values straight from the
// cache. The GEMM path spent more on per-call setup (a GEMV per head and product, each packing its
// operand) than on the products at decode sizes: 1.3 us per (row, kv head) at D 8, Tk 35 on a Xeon
// with AVX-512, one thread. attention_forward and attention_rows_forward both come here for Tq 1.
void decode_group(float* out, float* att, const float* q, const float* k, const float* v, const AttnDims& d, long b,
                  long hk) {
  const long group = d.Hq / d.Hkv, qs = d.Hq * d.D, ks = d.Hkv * d.D;
  const float scale = (float)d.scale, cap = (float)d.softcap;
  const float* kb = k + b * d.Tk * ks + hk * d.D;
  const float* vb = v + b * d.Tk * ks + hk * d.D;
  float* a = att + (b * d.Hq + hk * group) * d.Tk;
  const long s0 = start_of(d, 0), lim = limit_of(d, 0);
  head_scores(a + s0, d.Tk, q + b * qs + hk * group * d.D, group, kb + s0 * ks, ks, lim - s0, d.D);
  for (long h = 0; h < group; h++) {
    float* row = a + h * d.Tk;
    std::memset(row, 0, sizeof(float) * s0);  // keys before a sliding window's start
    if (cap > 0) cap_row(row + s0, lim - s0, scale, cap);
    softmax_decode_row(row + s0, lim - s0, d.Tk - s0, cap > 0 ? 1.0f : scale);
  }
  weighted_values(out + b * qs + hk * group * d.D, a, d.Tk, group, vb, ks, s0, lim, d.D);
}

// the forward of one (batch item b, kv head hk) group: its query heads' scores, softmax and outputs
void forward_group(float* out, float* att, const float* q, const float* k, const float* v, const AttnDims& d, long b,
                   long hk) {
  if (d.Tq == 1) return decode_group(out, att, q, k, v, d, b, hk);
  const long group = d.Hq / d.Hkv, qs = d.Hq * d.D, ks = d.Hkv * d.D;
  const float scale = (float)d.scale, cap = (float)d.softcap;
  // causal: the GEMMs skip what lies past each row's limit (about half the work)
  const Tri tri_n = d.causal ? TRI_N : TRI_NONE, tri_k = d.causal ? TRI_K_LOWER : TRI_NONE;
  const long off = d.Tk - d.Tq;
  const float* kb = k + b * d.Tk * ks + hk * d.D;
  const float* vb = v + b * d.Tk * ks + hk * d.D;
  for (long h = hk * group; h < (hk + 1) * group; h++) {
    const float* qb = q + b * d.Tq * qs + h * d.D;
    float* a = att + (b * d.Hq + h) * d.Tq * d.Tk;
    // scores [Tq, Tk] = q_h [Tq, D] . k_hk^T (tiles past the causal limit skipped)
    gemm_single((int)d.Tq, (int)d.Tk, (int)d.D, qb, qs, 1, kb, B_F32, 1, ks, a, d.Tk, false, tri_n, off);
    // a sliding window's row is a softmax over [start, limit), zero before it; a soft cap comes first
    for (long i = 0; i < d.Tq; i++) {
      float* row = a + i * d.Tk;
      long s0 = start_of(d, i);
      std::memset(row, 0, sizeof(float) * s0);
      if (cap > 0) cap_row(row + s0, limit_of(d, i) - s0, scale, cap);
      softmax_row(row + s0, row + s0, limit_of(d, i) - s0, d.Tk - s0, cap > 0 ? 1.0f : scale);
    }
    // out_h [Tq, D] = att [Tq, Tk] . v_hk [Tk, D] (each row's sum stops at its limit: att is 0 past it)
    gemm_single((int)d.Tq, (int)d.D, (int)d.Tk, a, d.Tk, 1, vb, B_F32, ks, 1, out + b * d.Tq * qs + h * d.D, qs,
                false, tri_k, off);
  }
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, const AttnDims& d) {
  groups(d, [&](long b, long hk) { forward_group(out, att, q, k, v, d, b, hk); });
}

// A batched decode over caches in one pool: keys, values [P, Hkv, D]; row b's cache lies at positions
// [at[2b], at[2b] + at[2b + 1]). Row b's new key and value (k, v [B, Hkv, D]) are written at the position
// after it, then row b (one query, Tq 1) attends over its at[2b + 1] + 1 positions: forward_group exactly as
// attention_forward runs it for that row alone (B 1), so the bits are the same; the B x Hkv groups are
// split between threads once, not once per row. The caller checks every row's place against P.
void attention_rows_forward(float* out, const float* q, const float* k, const float* v, float* keys, float* values,
                            const int32_t* at, long B, const AttnDims& d0) {
  const long qs = d0.Hq * d0.D, ks = d0.Hkv * d0.D;
  double work = 0;
  for (long b = 0; b < B; b++) {
    const long end = (long)at[2 * b] + at[2 * b + 1];
    std::memcpy(keys + end * ks, k + b * ks, sizeof(float) * ks);
    std::memcpy(values + end * ks, v + b * ks, sizeof(float) * ks);
    work += ((double)at[2 * b + 1] + 1) * d0.Hq * d0.D * 2;
  }
  parallel_range(B * d0.Hkv, group_grain(work, B * d0.Hkv), 1, [&](long g0, long g1) {
    for (long g = g0; g < g1; g++) {
      const long b = g / d0.Hkv, hk = g % d0.Hkv;
      AttnDims d = d0;
      d.B = 1, d.Tq = 1, d.Tk = (long)at[2 * b + 1] + 1;
      scratch.resize((size_t)d.Hq * d.Tk);
      const long first = (long)at[2 * b] * ks;
      forward_group(out + b * qs, scratch.data(), q + b * qs, keys + first, values + first, d, 0, hk);
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* att, const AttnDims& d) {
  const long group = d.Hq / d.Hkv, qs = d.Hq * d.D, ks = d.Hkv * d.D;
  const float scale = (float)d.scale, cap = (float)d.softcap;
  const Tri tri_n = d.causal ? TRI_N : TRI_NONE, tri_k = d.causal ? TRI_K_LOWER : TRI_NONE;
  const Tri tri_kt = d.causal ? TRI_K_UPPER : TRI_NONE;
  const long off = d.Tk - d.Tq;
  groups(d, [&](long b, long hk) {
    const float* kb = k + b * d.Tk * ks + hk * d.D;
    const float* vb = v + b * d.Tk * ks + hk * d.D;
    float* dkb = dk ? dk + b * d.Tk * ks + hk * d.D : nullptr;
    float* dvb = dv ? dv + b * d.Tk * ks + hk * d.D : nullptr;
    for (long j = 0; j < d.Tk; j++) {
      if (dkb) std::memset(dkb + j * ks, 0, sizeof(float) * d.D);
      if (dvb) std::memset(dvb + j * ks, 0, sizeof(float) * d.D);
    }
    // ds [Tq, Tk], then with a soft cap the raw scores [Tq, Tk]
    scratch.resize(d.Tq * d.Tk * (cap > 0 ? 2 : 1));
    float* ds = scratch.data();
    float* sc = cap > 0 ? ds + d.Tq * d.Tk : nullptr;
    for (long h = hk * group; h < (hk + 1) * group; h++) {
      const float* qb = q + b * d.Tq * qs + h * d.D;
      const float* gb = dout + b * d.Tq * qs + h * d.D;
      const float* a = att + (b * d.Hq + h) * d.Tq * d.Tk;
      // dv_hk [Tk, D] += att^T [Tk, Tq] . dout_h [Tq, D]
      if (dvb) gemm_single((int)d.Tk, (int)d.D, (int)d.Tq, a, 1, d.Tk, gb, B_F32, qs, 1, dvb, ks, true, tri_kt, off);
      if (!dq && !dkb) continue;
      // dp [Tq, Tk] = dout_h . v_hk^T, then the softmax backward: ds = p (dp - p.dp) * scale
      gemm_single((int)d.Tq, (int)d.Tk, (int)d.D, gb, qs, 1, vb, B_F32, 1, ks, ds, d.Tk, false, tri_n, off);
      // with a soft cap: the raw scores again, as the forward pass computed them
      if (sc) gemm_single((int)d.Tq, (int)d.Tk, (int)d.D, qb, qs, 1, kb, B_F32, 1, ks, sc, d.Tk, false, tri_n, off);
      for (long i = 0; i < d.Tq; i++) {
        long s0 = start_of(d, i);
        float* row = ds + i * d.Tk;
        std::memset(row, 0, sizeof(float) * s0);
        softmax_backward_row(row + s0, row + s0, a + i * d.Tk + s0, limit_of(d, i) - s0, d.Tk - s0,
                             sc ? 1.0f : scale);
        // through the cap: ds *= (1 - tanh^2) * scale
        if (sc) cap_grad_row(row + s0, sc + i * d.Tk + s0, limit_of(d, i) - s0, scale, cap);
      }
      // dq_h [Tq, D] = ds . k_hk ; dk_hk [Tk, D] += ds^T . q_h
      if (dq)
        gemm_single((int)d.Tq, (int)d.D, (int)d.Tk, ds, d.Tk, 1, kb, B_F32, ks, 1, dq + b * d.Tq * qs + h * d.D, qs,
                    false, tri_k, off);
      if (dkb) gemm_single((int)d.Tk, (int)d.D, (int)d.Tq, ds, 1, d.Tk, qb, B_F32, qs, 1, dkb, ks, true, tri_kt, off);
    }
  });
}

}  // namespace lora
