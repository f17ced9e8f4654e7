#include "gpu/cuda/common.cuh"
#include "gpu/cuda/gemm.cuh"

namespace tandem::cuda {

void gemm_f32(cublasHandle_t handle, const float* w, int64_t lda, int64_t n_rows, int64_t n_cols,
              const float* x, int64_t n_tokens, float* y, int64_t ldy) {
  // cuBLAS is column-major: row-major W is W^T with ld lda, row-major X is X^T, and the
  // row-major output [n_tokens][ldy] is the column-major Y^T = W * X^T with ld ldy.
  const float alpha = 1.0f, beta = 0.0f;
  CUBLAS_CHECK(cublasGemmEx(handle, CUBLAS_OP_T, CUBLAS_OP_N, static_cast<int>(n_rows),
                            static_cast<int>(n_tokens), static_cast<int>(n_cols), &alpha, w,
                            CUDA_R_32F, static_cast<int>(lda), x, CUDA_R_32F,
                            static_cast<int>(n_cols), &beta, y, CUDA_R_32F, static_cast<int>(ldy),
                            CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT));
}

}  // namespace tandem::cuda
