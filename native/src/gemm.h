// GEMM: C[b]: [M, N] (+)= op(A[b]): [M, K] @ op(B[b]): [K, N], A f32, B f32 or a 16-bit frozen weight.
// Element (i, k) of op(A) is A[i*rsA + k*csA]; (k, j) of op(B) is B[k*rsB + j*csB]: any transpose or
// row stride (attention heads) is just strides, resolved while packing.
#pragma once

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
};

// Splits between the pool's threads (by batch item, else by output columns or rows).
void gemm(const GemmArgs& g);
// One thread, one product: the building block of gemm() and of attention.
void gemm_single(int M, int N, int K, const float* A, long rsA, long csA, const void* B, int btype, long rsB,
                 long csB, float* C, long ldc, bool accumulate);

// What the GEMM runs on this CPU ("avx512", "avx2", "generic") and whether bf16 products are native.
const char* gemm_isa();
bool gemm_native_bf16();

}  // namespace lora
