// The fused and elementwise kernels of the native backend; shapes as in src/kernels/backend.ts.
#pragma once
#include <cstdint>

namespace lora {

// out[i] = a[i . aStrides] (+|*) b[i . bStrides] over outShape (nd <= 8)
void binary(bool mul, float* out, const float* a, const float* b, int nd, const long* shape, const long* as,
            const long* bs);
// out (zeroed first) = sum of g over the dims where outStrides is 0
void sum_to(float* out, long outLen, const float* g, int nd, const long* shape, const long* os);
void scale(float* out, const float* x, long n, float s);
// x: [rows, C] -> out: [rows, len]; backward accumulates
void slice(float* out, const float* x, long rows, long C, long start, long len);
void slice_backward(float* dx, const float* dout, long rows, long C, long start, long len);
// weight: [V, C] (btype: 0 f32, 1 bf16, 2 f16) -> out: [N, C]
void embedding_forward(float* out, const void* weight, int btype, const int32_t* ids, long N, long C);
void embedding_backward(float* dweight, const float* dout, const int32_t* ids, long N, long C);

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w, const float* b, long N,
                       long C, float eps);
void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x, const float* w,
                        const float* mean, const float* rstd, long N, long C);
void rmsnorm_forward(float* out, float* rstd, const float* x, const float* w, long N, long C, float eps);
void rmsnorm_backward(float* dx, float* dw, const float* dout, const float* x, const float* w, const float* rstd,
                      long N, long C);

void gelu_forward(float* out, const float* x, long n);
void gelu_backward(float* dx, const float* dout, const float* x, long n);
void silu_forward(float* out, const float* x, long n);
void silu_backward(float* dx, const float* dout, const float* x, long n);
// logit soft-capping: out = cap tanh(x / cap); backward from the output y: dx = dout (1 - (y / cap)^2)
void softcap_forward(float* out, const float* x, long n, float cap);
void softcap_backward(float* dx, const float* dout, const float* y, long n, float cap);
// One row: out[0, lim) = softmax(scale * x[0, lim)) and out[lim, n) = 0 (lim = n for a plain softmax;
// attention passes its causal limit); out may be x.
void softmax_row(float* out, const float* x, long lim, long n, float scale);
// ds[0, lim) = p (dp - p.dp) * scale, ds[lim, n) = 0; ds may be dp
void softmax_backward_row(float* ds, const float* dp, const float* p, long lim, long n, float scale);
void softmax_forward(float* out, const float* x, long N, long C);
void softmax_backward(float* dx, const float* dout, const float* y, long N, long C);

// freqs: [R/2] inverse frequencies (R <= D: partial rotary, dims R.. pass through); the pair
// (i, i + R/2) turns by (offset + t) * freqs[i], cos and sin times scale
void rope(float* out, const float* x, long B, long T, long H, long D, long offset, const double* freqs, long R,
          double scale, bool inverse);
// x, out: [B, H, D], row b at position offsets[b] (forward only), each row as rope() of it alone
void rope_rows(float* out, const float* x, long B, long H, long D, const int32_t* offsets, const double* freqs,
               long R, double scale);

void cross_entropy_forward(float* losses, float* lse, const float* logits, const int32_t* targets, long N, long V);
void cross_entropy_backward(float* dlogits, const float* logits, const float* lse, const int32_t* targets, long N,
                            long V, float scale);

void adamw(float* p, const float* g, float* m, float* v, long n, double lr, double beta1, double beta2, double eps,
           double wd, double step);

struct AttnDims {
  long B, Tq, Tk, Hq, Hkv, D;
  bool causal;
  double scale;  // scores are q.k * scale
  long window;   // sliding window (0: none): query at position p sees keys p - window < j <= p
  double softcap;  // 0: none; else scores s become softcap * tanh(s / softcap) before the softmax
};
// a batched decode's LoRA term of one layer, each adapter group on its rows (lora_rows.cc)
struct RowGroup {
  const int32_t* rows;  // m rows of the batch
  long m;
  const float* A;  // [r, inF]
  const float* B;  // [outF, r]
  long r;
  double scaling;
  const float* panels = nullptr;  // B packed by pack_small_k (r <= DOTS_SMALL_K), or null: packed here
};
void lora_rows(float* y, const float* x, long inF, long outF, const RowGroup* groups, long G, long chunk);
// a batched decode's adapted layer: y [M, N] = x [M, K] @ W^T batch-invariant in chunks of `chunk` rows
// (the matmul export's product), then lora_rows' term of each group
void linear_rows(float* y, const float* x, const void* w, int btype, long M, long N, long K, const RowGroup* groups,
                 long G, long chunk);
void attention_forward(float* out, float* att, const float* q, const float* k, const float* v, const AttnDims& d);
// a batched decode's attention over caches in one pool: row b's new k, v written after its cache
// [at[2b], at[2b] + at[2b + 1]) of keys, values, then row b (one query) over that cache (attention.cc)
void attention_rows_forward(float* out, const float* q, const float* k, const float* v, float* keys, float* values,
                            const int32_t* at, long B, const AttnDims& d);
void attention_backward(float* dq, float* dk, float* dv, const float* dout, const float* q, const float* k,
                        const float* v, const float* att, const AttnDims& d);

}  // namespace lora
