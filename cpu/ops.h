// Element-wise and row-wise ops of the forward pass. Rounding follows ggml's CPU backend so
// results track llama.cpp closely (see each function's note).
#pragma once

#include <cstdint>

namespace tandem {

// y = x / sqrt(mean(x^2) + eps) * w. Sum of squares in double, scale as float (ggml's order).
// w may be null (no weight). x and y may alias.
void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y);

// Rotary position embedding in place on one head of head_dim floats; the first n_rot dims
// rotate. neox: pairs (i, i + n_rot/2); otherwise adjacent pairs (2i, 2i+1).
// Angles: pos * freq_scale * base^(-2i/n_rot), built by repeated multiplication like ggml.
void rope(float* head, int64_t n_rot, int32_t pos, float freq_base, float freq_scale, bool neox);

// Numerically stable softmax in place (max subtracted, sum in double).
void softmax(float* x, int64_t n);

// x * sigmoid(x)
float silu(float x);

}  // namespace tandem
