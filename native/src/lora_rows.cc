// A batched decode's LoRA term, every adapter group of one layer in one call (Punica's BGMV as one
// grouped product per adapter): for each group g, on its rows,
//   y[rows] += (scaling_g * x[rows] A_g^T) B_g^T        (A_g [r, inF], B_g [outF, r])
// with the bits of the per-kernel path (autograd/rows.ts loraRows without this kernel: matmul, scale,
// matmul, an f32 add), y updated in place (the caller's own base output):
// - chunk <= INVARIANT_ROWS (batch-invariant mode): each row through the kernels the GEMV runs for one row
//   (dots_f32 for x A^T, whose rows do not depend on M; for B^T over K = r <= DOTS_SMALL_K the small-k
//   panels, B packed once per call or once for good by packLoraB), so every row gets the bits of that
//   row decoded alone;
// - else (a prompt's prefill outside it): the group's rows gathered, each product through gemm() in
//   chunks of at most `chunk` rows, as the matmul export runs it.
#include <algorithm>
#include <vector>

#include "gemm.h"
#include "ops.h"
#include "pool.h"

namespace lora {
namespace {

// out [m, N] = x [m, K] @ W^T (W [N, K], f32 or 16-bit `btype`), in chunks of at most `chunk` rows, as the
// matmul export runs x @ W^T (batch-invariant: `invariant`)
void product_rows(float* out, const float* x, const void* w, int btype, long m, long N, long K, long chunk,
                  bool invariant) {
  for (long i = 0; i < m; i += chunk) {
    const long c = std::min(chunk, m - i);
    GemmArgs g;
    g.batch = 1, g.M = (int)c, g.N = (int)N, g.K = (int)K;
    g.A = x + i * K, g.rsA = K, g.csA = 1, g.strideA = 0;
    g.B = w, g.btype = btype, g.rsB = 1, g.csB = K, g.strideB = 0;
    g.C = out + i * N, g.ldc = N, g.strideC = 0;
    g.accumulate = false;
    g.invariant = invariant;
    gemm(g);
  }
}

// one group, its rows gathered and its products in chunks of `chunk` rows
void group_chunked(float* y, const float* x, long inF, long outF, const RowGroup& q, long chunk) {
  std::vector<float> xs((size_t)(q.m * inF)), ax((size_t)(q.m * q.r)), delta((size_t)(q.m * outF));
  for (long i = 0; i < q.m; i++) std::copy(x + q.rows[i] * inF, x + (q.rows[i] + 1) * inF, xs.data() + i * inF);
  product_rows(ax.data(), xs.data(), q.A, B_F32, q.m, q.r, inF, chunk, false);
  scale(ax.data(), ax.data(), q.m * q.r, (float)q.scaling);
  product_rows(delta.data(), ax.data(), q.B, B_F32, q.m, outF, q.r, chunk, false);
  for (long i = 0; i < q.m; i++) {
    float* yr = y + (long)q.rows[i] * outF;
    const float* d = delta.data() + i * outF;
    for (long j = 0; j < outF; j++) yr[j] = yr[j] + d[j];
  }
}

}  // namespace

// With fewer than twice this many multiply-adds in a call's up-projections, they stay on the calling thread.
constexpr long SPLIT_WORK = 1 << 15;

void lora_rows(float* y, const float* x, long inF, long outF, const RowGroup* groups, long G, long chunk) {
  if (chunk > INVARIANT_ROWS) {
    for (long g = 0; g < G; g++) group_chunked(y, x, inF, outF, groups[g], chunk);
    return;
  }
  // each group's scaled x A^T [m, r] (dots_f32 gives each row the bits it gets alone; its rows read in
  // place), and B's panels where packLoraB made none. Kept between calls (no malloc a call), in one
  // thread_local: in a shared library each thread_local's address is a call to __tls_get_addr.
  thread_local struct {
    std::vector<float> xs, ax, bt, delta;
    std::vector<long> at, packed_at;  // offsets of each group's x A^T and B panels
  } tls;
  auto &xs = tls.xs, &ax = tls.ax, &bt = tls.bt;
  auto &at = tls.at, &packed_at = tls.packed_at;
  at.assign(G + 1, 0);
  packed_at.assign(G + 1, 0);
  long work = 0;
  for (long g = 0; g < G; g++) {
    at[g + 1] = at[g] + groups[g].m * groups[g].r;
    const bool pack = groups[g].r <= DOTS_SMALL_K && !groups[g].panels;
    packed_at[g + 1] = packed_at[g] + (pack ? small_k_panel((int)outF, (int)groups[g].r) : 0);
    work += groups[g].m * groups[g].r * outF;
  }
  ax.resize((size_t)at[G]);
  bt.resize((size_t)packed_at[G]);
  for (long g = 0; g < G; g++) {
    const RowGroup& q = groups[g];
    float* a = ax.data() + at[g];
    if (inF > DOTS_SMALL_K) {
      dots_f32_gather((int)q.m, (int)inF, x, q.rows, q.A, inF, a, q.r, 0, (int)q.r);
    } else {  // a layer this narrow packs A (dots_f32's few-k path) and reads its rows contiguous
      xs.resize((size_t)(q.m * inF));
      for (long i = 0; i < q.m; i++) std::copy(x + q.rows[i] * inF, x + (q.rows[i] + 1) * inF, xs.data() + i * inF);
      dots_f32((int)q.m, (int)inF, xs.data(), q.A, inF, a, q.r, false, 0, (int)q.r);
    }
    const float s = (float)q.scaling;
    for (long i = 0; i < q.m * q.r; i++) a[i] = a[i] * s;  // scale()'s f32 product
    if (packed_at[g + 1] > packed_at[g]) pack_small_k(bt.data() + packed_at[g], q.B, q.r, (int)q.r, (int)outF);
  }
  // the up-projections and the adds into y, split between threads by output columns, a panel at a time, when
  // there is enough work (an output's bits do not depend on the split): they are most of the term's
  // multiply-adds, and with one thread the LoRA term of bench:serve --width 512 took 0.93 ms a step
  // (the caller's arrays go to the workers as pointers: a thread_local named there is each worker's own).
  // With r <= DOTS_SMALL_K each product is added into its row of y as it is made (dots_small_k_scatter:
  // the bits of the product, then the add); a larger r goes through a delta and an add.
  const float* axs = ax.data();
  const float* packed = bt.data();
  const long* ax_at = at.data();
  const long* panel_at = packed_at.data();
  const long lanes = small_k_lanes();  // a split's columns start on a panel
  auto up = [&](long n0, long n1, std::vector<float>& delta) {
    const long n = n1 - n0;
    for (long g = 0; g < G; g++) {
      const RowGroup& q = groups[g];
      const float* a = axs + ax_at[g];
      if (q.r <= DOTS_SMALL_K) {
        const float* panels = q.panels ? q.panels : packed + panel_at[g];
        dots_small_k_scatter((int)q.m, (int)q.r, a, panels + (n0 / lanes) * q.r * lanes, (int)n, y + n0, q.rows,
                             outF);
        continue;
      }
      delta.resize((size_t)(q.m * n));
      dots_f32((int)q.m, (int)q.r, a, q.B + n0 * q.r, q.r, delta.data(), n, false, 0, (int)n);
      for (long i = 0; i < q.m; i++) {
        float* yr = y + (long)q.rows[i] * outF + n0;
        const float* d = delta.data() + i * n;
        for (long j = 0; j < n; j++) yr[j] = yr[j] + d[j];
      }
    }
  };
  if (work < 2 * SPLIT_WORK) return up(0, outF, tls.delta);  // no std::function, no pool, at decode sizes
  parallel_range(outF, lanes, lanes, [&](long n0, long n1) {
    thread_local std::vector<float> delta;  // each worker's own
    up(n0, n1, delta);
  });
}

void linear_rows(float* y, const float* x, const void* w, int btype, long M, long N, long K, const RowGroup* groups,
                 long G, long chunk) {
  product_rows(y, x, w, btype, M, N, K, chunk, true);
  lora_rows(y, x, K, N, groups, G, chunk);
}

}  // namespace lora
