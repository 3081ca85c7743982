// GEMM: C[b]: [M, N] (+)= op(A[b]): [M, K] @ op(B[b]): [K, N], A f32, B f32 or a 16-bit frozen weight.
// Element (i, k) of op(A) is A[i*rsA + k*csA]; (k, j) of op(B) is B[k*rsB + j*csB]: any transpose or
// row stride (attention heads) is just strides, resolved while packing.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace lora {

enum BType { B_F32 = 0, B_BF16 = 1, B_F16 = 2 };

struct GemmArgs {
  int batch, M, N, K;
  const float* A;
  long rsA, csA, strideA;
  const void* B;
  int btype;
  long rsB, csB, strideB;
  float* C;
  long ldc, strideC;
  bool accumulate;
  // a batch-invariant product (autograd/invariant.ts): up to INVARIANT_ROWS rows take the GEMV, whose
  // rows do not depend on M, not the tiled path
  bool invariant = false;
};

// Splits between the pool's threads (by batch item, else by output columns or rows).
void gemm(const GemmArgs& g);
// Causal structure one product may skip (attention), for row i of C and offset `off` (= Tk - Tq):
//   TRI_N:       only C[i][j] with j <= off + i is needed; tiles past it are skipped (left unspecified)
//   TRI_K_LOWER: A[i][k] is 0 for k > off + i (probabilities, dS): the sum stops there
//   TRI_K_UPPER: A[i][k] is 0 for k < i - off (their transposes); only with accumulate
enum Tri { TRI_NONE = 0, TRI_N, TRI_K_LOWER, TRI_K_UPPER };

// One thread, one product: the building block of gemm() and of attention.
void gemm_single(int M, int N, int K, const float* A, long rsA, long csA, const void* B, int btype, long rsB,
                 long csB, float* C, long ldc, bool accumulate, Tri tri = TRI_NONE, long off = 0);

// x @ W^T for few k (K <= DOTS_SMALL_K, a LoRA up-projection's K = r), as the GEMV runs it (gemm.cc):
// W [N, K] (row stride csB) packed once into panels of 8 outputs, then each row's outputs from them,
// each output summed over k in order: its bits depend on its row alone.
constexpr int DOTS_SMALL_K = 16;
// Products of up to this many rows take the GEMV (packing the weight costs more than it saves: prefill,
// decode), whose rows do not depend on M.
constexpr int GEMV_ROWS = 8;
// A batch-invariant product (GemmArgs.invariant) of up to this many rows takes the GEMV too: one call for
// a whole decode batch reads each weight once for all its rows (two 8-row calls read it twice: the base
// products of a 16-row decode step of bench:serve --width 512 took 9.6 ms so, 8.1 in one call, on a
// 2-core Xeon with AVX-512). The native backend's invariantRows.
constexpr int INVARIANT_ROWS = 64;
int small_k_lanes();               // outputs per panel: 16 at AVX-512, else 8
long small_k_panel(int N, int K);  // floats pack_small_k writes
void pack_small_k(float* wt, const float* W, long csB, int K, int N);
// c [M, N] (row stride ldc) (+)= x [M, K] @ W^T from the panels, each output summed over k in order
void dots_small_k_rows(int M, int K, const float* x, const float* wt, int N, float* c, long ldc, bool accumulate);
// the same product added into rows of a batch: c + rows[i] * ldc += x_i @ W^T (y + the product, in one pass)
void dots_small_k_scatter(int M, int K, const float* x, const float* wt, int N, float* c, const int32_t* rows,
                          long ldc);
// The f32 dots of the GEMV's rows: C[i, j] (+)= x_i . W[j] for i < M, j in [n0, n1), W [N, K] (row
// stride csB), x [M, K] contiguous: the bits the GEMV gives each row, whatever M is.
void dots_f32(int M, int K, const float* x, const float* W, long csB, float* C, long ldc, bool accumulate, int n0,
              int n1);
// dots_f32 (K > DOTS_SMALL_K, no accumulate) over rows of a batch read in place: row i is x + rows[i] * K
void dots_f32_gather(int M, int K, const float* x, const int32_t* rows, const float* W, long csB, float* C, long ldc,
                     int n0, int n1);

// The ISA level every native kernel runs at ("avx512bf16", "avx512", "avx2", "generic"): the CPU's best,
// or the one LORA_ISA forces; whether bf16 products are native; the CPU's best level; whether LORA_ISA
// forced it; why LORA_ISA was refused ("" when it was not); and the levels this CPU runs, best first.
const char* gemm_isa();
bool gemm_native_bf16();
bool gemm_bf16_faster();  // --base-dtype auto's choice: bf16 products faster than f32 here (gemm.cc)
const char* gemm_cpu_isa();
bool gemm_isa_forced();
const char* gemm_isa_error();
std::vector<std::string> gemm_supported_isas();

}  // namespace lora
