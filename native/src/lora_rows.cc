// A batched decode's LoRA term, every adapter group of one layer in one call (Punica's BGMV as one
// grouped product per adapter): for each group g, on its rows,
//   y[rows] += (scaling_g * x[rows] A_g^T) B_g^T        (A_g [r, inF], B_g [outF, r])
// with the bits of the per-kernel path (autograd/rows.ts loraRows without this kernel: matmul, scale,
// matmul, an f32 add), y updated in place (the caller's own base output):
// - chunk <= GEMV_ROWS (batch-invariant mode): each row through the kernels the GEMV runs for one row
//   (dots_f32 for x A^T, whose rows do not depend on M; for B^T over K = r <= DOTS_SMALL_K the small-k
//   panels, B packed once per call or once for good by packLoraB), so every row gets the bits of that
//   row decoded alone;
// - else (a prompt's prefill outside it): the group's rows gathered, each product through gemm() in
//   chunks of at most `chunk` rows, as the matmul export runs it.
#include <algorithm>
#include <vector>

#include "gemm.h"
#include "ops.h"

namespace lora {
namespace {

// out [m, N] = x [m, K] @ W^T (W [N, K]), in chunks of at most `chunk` rows
void product_rows(float* out, const float* x, const float* w, long m, long N, long K, long chunk) {
  for (long i = 0; i < m; i += chunk) {
    const long c = std::min(chunk, m - i);
    GemmArgs g;
    g.batch = 1, g.M = (int)c, g.N = (int)N, g.K = (int)K;
    g.A = x + i * K, g.rsA = K, g.csA = 1, g.strideA = 0;
    g.B = w, g.btype = B_F32, g.rsB = 1, g.csB = K, g.strideB = 0;
    g.C = out + i * N, g.ldc = N, g.strideC = 0;
    g.accumulate = false;
    gemm(g);
  }
}

// one group, its rows gathered and its products in chunks of `chunk` rows
void group_chunked(float* y, const float* x, long inF, long outF, const RowGroup& q, long chunk) {
  std::vector<float> xs((size_t)(q.m * inF)), ax((size_t)(q.m * q.r)), delta((size_t)(q.m * outF));
  for (long i = 0; i < q.m; i++) std::copy(x + q.rows[i] * inF, x + (q.rows[i] + 1) * inF, xs.data() + i * inF);
  product_rows(ax.data(), xs.data(), q.A, q.m, q.r, inF, chunk);
  scale(ax.data(), ax.data(), q.m * q.r, (float)q.scaling);
  product_rows(delta.data(), ax.data(), q.B, q.m, outF, q.r, chunk);
  for (long i = 0; i < q.m; i++) {
    float* yr = y + (long)q.rows[i] * outF;
    const float* d = delta.data() + i * outF;
    for (long j = 0; j < outF; j++) yr[j] = yr[j] + d[j];
  }
}

}  // namespace

void lora_rows(float* y, const float* x, long inF, long outF, const RowGroup* groups, long G, long chunk) {
  thread_local std::vector<float> xs, ax, delta, bt;
  delta.resize((size_t)outF);
  for (long g = 0; g < G; g++) {
    const RowGroup& q = groups[g];
    if (chunk > GEMV_ROWS) {
      group_chunked(y, x, inF, outF, q, chunk);
      continue;
    }
    const long r = q.r;
    const bool small = r <= DOTS_SMALL_K;
    const float* panels = q.panels;
    if (small && !panels) {
      bt.resize((size_t)small_k_panel((int)outF, (int)r));
      pack_small_k(bt.data(), q.B, r, (int)r, (int)outF);
      panels = bt.data();
    }
    // x A^T for the group's rows at once (dots_f32 gives each row the bits it gets alone), scaled
    xs.resize((size_t)(q.m * inF));
    ax.resize((size_t)(q.m * r));
    for (long i = 0; i < q.m; i++) std::copy(x + q.rows[i] * inF, x + (q.rows[i] + 1) * inF, xs.data() + i * inF);
    dots_f32((int)q.m, (int)inF, xs.data(), q.A, inF, ax.data(), r, false, 0, (int)r);
    const float s = (float)q.scaling;
    for (long i = 0; i < q.m * r; i++) ax[i] = ax[i] * s;  // scale()'s f32 product
    for (long i = 0; i < q.m; i++) {
      const float* ai = ax.data() + i * r;
      if (small)
        dots_small_k((int)r, ai, panels, (int)outF, delta.data(), false);
      else
        dots_f32(1, (int)r, ai, q.B, r, delta.data(), outF, false, 0, (int)outF);
      float* yr = y + (long)q.rows[i] * outF;
      for (long j = 0; j < outF; j++) yr[j] = yr[j] + delta[j];
    }
  }
}

}  // namespace lora
