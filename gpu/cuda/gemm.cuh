// Prefill-size products through cuBLAS: the weight chunk is dequantized to f32 first (see
// cuda_ops.cpp), activations are pre-rounded like the CPU's, then one f32 GEMM per chunk.
#pragma once

#include <cublas_v2.h>

#include <cstdint>

namespace tandem::cuda {

// y[t * ldy + r] = dot(w[r], x[t]) for r < n_rows, t < n_tokens; w: n_rows rows of n_cols f32, row
// r at w + r * lda, x: [n_tokens][n_cols] f32. Full f32 compute (no TF32), so results track the
// CPU's.
void gemm_f32(cublasHandle_t handle, const float* w, int64_t lda, int64_t n_rows, int64_t n_cols,
              const float* x, int64_t n_tokens, float* y, int64_t ldy);

}  // namespace tandem::cuda
