// Causal grouped-query attention through the GEMM, one (batch, kv-head) group per task so that dk and dv
// (shared by the group's query heads) are written by one thread only.
// q: [B, Tq, Hq, D], k, v: [B, Tk, Hkv, D] -> out: [B, Tq, Hq, D]; att: [B, Hq, Tq, Tk] probabilities
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

constexpr long ROWS = 64;  // query rows per block: blocks stop at their causal limit, halving the work

long limit_of(const AttnDims& d, long i) { return d.causal ? d.Tk - d.Tq + i + 1 : d.Tk; }

// for every (b, kv head): fn(b, hk)
template <class F>
void groups(const AttnDims& d, F fn) {
  parallel_range(d.B * d.Hkv, 1, 1, [&](long g0, long g1) {
    for (long g = g0; g < g1; g++) fn(g / d.Hkv, g % d.Hkv);
  });
}

}  // namespace

void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, const AttnDims& d) {
  const long group = d.Hq / d.Hkv, qs = d.Hq * d.D, ks = d.Hkv * d.D;
  const float scale = (float)(1.0 / std::sqrt((double)d.D));
  groups(d, [&](long b, long hk) {
    const float* kb = k + b * d.Tk * ks + hk * d.D;
    const float* vb = v + b * d.Tk * ks + hk * d.D;
    for (long h = hk * group; h < (hk + 1) * group; h++) {
      const float* qb = q + b * d.Tq * qs + h * d.D;
      float* a = att + (b * d.Hq + h) * d.Tq * d.Tk;
      // scores [Tq, Tk] = q_h [Tq, D] . k_hk^T, by row blocks that stop at the causal limit
      for (long i0 = 0; i0 < d.Tq; i0 += ROWS) {
        long i1 = i0 + ROWS < d.Tq ? i0 + ROWS : d.Tq, cols = limit_of(d, i1 - 1);
        gemm_single((int)(i1 - i0), (int)cols, (int)d.D, qb + i0 * qs, qs, 1, kb, B_F32, 1, ks, a + i0 * d.Tk, d.Tk,
                    false);
      }
      for (long i = 0; i < d.Tq; i++) {
        float* row = a + i * d.Tk;
        long lim = limit_of(d, i);
        float m = -__builtin_inff();
        for (long j = 0; j < lim; j++) {
          row[j] *= scale;
          m = row[j] > m ? row[j] : m;
        }
        float s = 0;
#pragma omp simd reduction(+ : s)
        for (long j = 0; j < lim; j++) {
          row[j] = vexp(row[j] - m);
          s += row[j];
        }
        float inv = 1.0f / s;
        for (long j = 0; j < lim; j++) row[j] *= inv;
        for (long j = lim; j < d.Tk; j++) row[j] = 0.0f;
      }
      // out_h [Tq, D] = att [Tq, Tk] . v_hk [Tk, D]; a row block's probabilities are 0 past its limit
      for (long i0 = 0; i0 < d.Tq; i0 += ROWS) {
        long i1 = i0 + ROWS < d.Tq ? i0 + ROWS : d.Tq, depth = limit_of(d, i1 - 1);
        gemm_single((int)(i1 - i0), (int)d.D, (int)depth, a + i0 * d.Tk, d.Tk, 1, vb, B_F32, ks, 1,
                    out + (b * d.Tq + i0) * qs + h * d.D, qs, false);
      }
    }
  });
}

void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* att, const AttnDims& d) {
  const long group = d.Hq / d.Hkv, qs = d.Hq * d.D, ks = d.Hkv * d.D;
  const float scale = (float)(1.0 / std::sqrt((double)d.D));
  groups(d, [&](long b, long hk) {
    const float* kb = k + b * d.Tk * ks + hk * d.D;
    const float* vb = v + b * d.Tk * ks + hk * d.D;
    float* dkb = dk ? dk + b * d.Tk * ks + hk * d.D : nullptr;
    float* dvb = dv ? dv + b * d.Tk * ks + hk * d.D : nullptr;
    for (long j = 0; j < d.Tk; j++) {
      if (dkb) std::memset(dkb + j * ks, 0, sizeof(float) * d.D);
      if (dvb) std::memset(dvb + j * ks, 0, sizeof(float) * d.D);
    }
    scratch.resize(d.Tq * d.Tk);
    float* ds = scratch.data();
    for (long h = hk * group; h < (hk + 1) * group; h++) {
      const float* qb = q + b * d.Tq * qs + h * d.D;
      const float* gb = dout + b * d.Tq * qs + h * d.D;
      const float* a = att + (b * d.Hq + h) * d.Tq * d.Tk;
      for (long i0 = 0; i0 < d.Tq; i0 += ROWS) {
        // query rows [i0, i1) see keys [0, lim): every product below stops there
        const int m = (int)((i0 + ROWS < d.Tq ? i0 + ROWS : d.Tq) - i0), lim = (int)limit_of(d, i0 + m - 1);
        const float* ab = a + i0 * d.Tk;
        const float* gi = gb + i0 * qs;
        // dv_hk [lim, D] += att^T [lim, m] . dout_h [m, D]
        if (dvb) gemm_single(lim, (int)d.D, m, ab, 1, d.Tk, gi, B_F32, qs, 1, dvb, ks, true);
        if (!dq && !dkb) continue;
        // dp [m, lim] = dout_h . v_hk^T, then the softmax backward: ds = p (dp - p.dp) * scale
        float* dsb = ds + i0 * d.Tk;
        gemm_single(m, lim, (int)d.D, gi, qs, 1, vb, B_F32, 1, ks, dsb, d.Tk, false);
        for (long i = 0; i < m; i++) {
          float* r = dsb + i * d.Tk;
          const float* p = ab + i * d.Tk;
          long li = limit_of(d, i0 + i);
          float dot = 0;
#pragma omp simd reduction(+ : dot)
          for (long j = 0; j < li; j++) dot += r[j] * p[j];
          for (long j = 0; j < li; j++) r[j] = p[j] * (r[j] - dot) * scale;
          for (long j = li; j < lim; j++) r[j] = 0.0f;
        }
        // dq_h [m, D] = ds . k_hk ; dk_hk [lim, D] += ds^T . q_h
        if (dq)
          gemm_single(m, (int)d.D, lim, dsb, d.Tk, 1, kb, B_F32, ks, 1, dq + (b * d.Tq + i0) * qs + h * d.D, qs, false);
        if (dkb) gemm_single(lim, (int)d.D, m, dsb, 1, d.Tk, qb + i0 * qs, B_F32, qs, 1, dkb, ks, true);
      }
    }
  });
}

}  // namespace lora
