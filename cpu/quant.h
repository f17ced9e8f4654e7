// Quantized tensor formats: reference (scalar) dequantization, quantization and dot products.
// The fast kernels (cpu/kernels_*.cpp) are checked against these in tests.
//
// Dot products follow llama.cpp's scheme so results match it closely: the activation row is
// first quantized to the weight type's "vec_dot type" (f16 for F16, bf16 for BF16, q8_0 for
// the 32-element formats, q8_K for K-quants, f32 for F32), then dotted block by block.
#pragma once

#include <cstdint>

#include "cpu/quant_types.h"

namespace tandem {

// dst[0..n) = values of n elements stored in `type` at src. n must be a multiple of the
// block size. Supports every type whose traits say `supported`, plus Q8_K.
void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n);

// Whether quantize_row can produce `type`.
bool can_quantize(GgmlType type);
// Writes n floats as `type` (n a multiple of the block size): F32, F16, BF16, Q8_0, Q4_0,
// Q4_1, Q5_0, Q5_1, Q4_K, Q5_K, Q6_K, Q8_K. Rounding rules match llama.cpp's reference
// quantizers (quantize_row_*_ref), so activations quantized here equal what llama.cpp computes.
void quantize_row(GgmlType type, const float* src, void* dst, int64_t n);

// The format activations are converted to before a dot with a row of `weight_type`.
GgmlType vec_dot_type(GgmlType weight_type);

// Dot product of one weight row (n elements of weight_type) with one activation row already
// quantized to vec_dot_type(weight_type). Reference implementation: clear, scalar.
float vec_dot_ref(GgmlType weight_type, int64_t n, const void* weight_row, const void* act_row);

}  // namespace tandem
