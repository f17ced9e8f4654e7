// Reference K-quant routines (Q4_K, Q5_K, Q6_K, Q8_K), used by cpu/quant.cpp's dispatch.
#pragma once

#include <cstdint>

#include "cpu/quant_blocks.h"

namespace tandem::kquant {

void dequantize_q4k(const BlockQ4K* x, float* y, int64_t n_blocks);
void dequantize_q5k(const BlockQ5K* x, float* y, int64_t n_blocks);
void dequantize_q6k(const BlockQ6K* x, float* y, int64_t n_blocks);
void dequantize_q8k(const BlockQ8K* x, float* y, int64_t n_blocks);

void quantize_q4k(const float* x, BlockQ4K* y, int64_t n_blocks);
void quantize_q5k(const float* x, BlockQ5K* y, int64_t n_blocks);
void quantize_q6k(const float* x, BlockQ6K* y, int64_t n_blocks);
// Activation quantizer; equals llama.cpp's quantize_row_q8_K_ref bit for bit.
void quantize_q8k(const float* x, BlockQ8K* y, int64_t n_blocks);

float dot_q4k_q8k(const BlockQ4K* x, const BlockQ8K* y, int64_t n_blocks);
float dot_q5k_q8k(const BlockQ5K* x, const BlockQ8K* y, int64_t n_blocks);
float dot_q6k_q8k(const BlockQ6K* x, const BlockQ8K* y, int64_t n_blocks);

}  // namespace tandem::kquant
