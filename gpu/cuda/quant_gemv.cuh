// Decode-time matrix-vector products straight from quantized weights, and the activation
// quantization they need. Activations are rounded exactly as the CPU matmul rounds them
// (vec_dot_type: q8_0, q8_1 or q8_K blocks; f16/bf16 for the 16-bit float weights).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/quant_types.h"

namespace tandem::cuda {

// Most tokens one GEMV launch handles; above this the GEMM path (cuBLAS) is used.
constexpr int64_t kMaxGemvTokens = 8;

// Quantizes n_tokens rows of n_cols floats (n_cols a multiple of the block size) to act_type
// (Q8_0, Q8_1 or Q8_K), row t at out + t * row_bytes(act_type, n_cols). With as_floats, writes
// the dequantized values instead (n_tokens * n_cols floats): activations rounded like the CPU's,
// ready for an f32 GEMM.
void launch_quantize_activations(GgmlType act_type, const float* x, int64_t n_tokens,
                                 int64_t n_cols, void* out, bool as_floats, cudaStream_t stream);

struct GemvArgs {
  GgmlType type;  // weight type
  const void* w;  // row r at w + r * row_stride bytes
  int64_t row_stride;
  int64_t n_rows, n_cols;
  const void* act;   // quantized activations (quantized types) or f32 x (float types)
  int64_t n_tokens;  // 1..kMaxGemvTokens
  float* y;          // [n_tokens][n_rows]
};

// y[t][r] = dot(row r, x[t]); one warp per row, integer dot products per block.
void launch_gemv(const GemvArgs& args, cudaStream_t stream);

// Most matrices one batched GEMV launch handles (the arguments travel as kernel parameters).
constexpr int kMaxGemvBatch = 64;

// The same product for several matrices of one shape and type (one layer's experts) in one
// launch: matrix j multiplies rows row0[j] .. row0[j] + n_tokens[j] - 1 of the activations
// (quantized or f32 as for launch_gemv, all rows together) into the same rows of y
// ([all rows][n_rows]).
struct GemvBatchArgs {
  GgmlType type;
  int64_t row_stride;
  int64_t n_rows, n_cols;
  const void* act;
  float* y;
  int n_matrices;  // 1..kMaxGemvBatch
  const void* w[kMaxGemvBatch];
  int32_t row0[kMaxGemvBatch];
  int32_t n_tokens[kMaxGemvBatch];  // each 1..kMaxGemvTokens
};
void launch_gemv_batch(const GemvBatchArgs& args, cudaStream_t stream);

}  // namespace tandem::cuda
