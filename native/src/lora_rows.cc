// A batched decode's LoRA term, every adapter group of one layer in one call (Punica's BGMV as one
// grouped product per adapter): for each group g, on its rows,
//   y[rows] += (scaling_g * x[rows] A_g^T) B_g^T        (A_g [r, inF], B_g [outF, r])
// Each product runs through gemm() in chunks of at most `chunk` rows with the arguments the matmul
// export passes, the scale is ops.cc's, and the add is an f32 add: so every row gets the bits the
// per-kernel path (autograd/rows.ts loraRows without this kernel) gives it, which are the bits of that
// row alone.
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

}  // namespace

void lora_rows(float* y, const float* x, long inF, long outF, const int32_t* rows, const int32_t* starts, long G,
               const float* const* As, const float* const* Bs, const int32_t* ranks, const double* scalings,
               long chunk) {
  std::vector<float> xs, ax, delta;
  for (long g = 0; g < G; g++) {
    const long m = starts[g + 1] - starts[g], r = ranks[g];
    const int32_t* rg = rows + starts[g];
    xs.resize((size_t)(m * inF));
    ax.resize((size_t)(m * r));
    delta.resize((size_t)(m * outF));
    for (long i = 0; i < m; i++) std::copy(x + rg[i] * inF, x + (rg[i] + 1) * inF, xs.data() + i * inF);
    product_rows(ax.data(), xs.data(), As[g], m, r, inF, chunk);
    scale(ax.data(), ax.data(), m * r, (float)scalings[g]);
    product_rows(delta.data(), ax.data(), Bs[g], m, outF, r, chunk);
    for (long i = 0; i < m; i++) {
      float* yr = y + rg[i] * outF;
      const float* d = delta.data() + i * outF;
      for (long j = 0; j < outF; j++) yr[j] = yr[j] + d[j];
    }
  }
}

}  // namespace lora
