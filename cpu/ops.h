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
// rope() in two steps, so that every head of a token shares one table: cos_sin[2i], cos_sin[2i+1]
// = cos and sin of angle i (n_rot floats in all), then the rotation with them.
void rope_angles(int64_t n_rot, int32_t pos, float freq_base, float freq_scale, float* cos_sin);
void rope_rotate(float* head, int64_t n_rot, const float* cos_sin, bool neox);

// Numerically stable softmax in place (max subtracted, sum in double).
void softmax(float* x, int64_t n);

// x * sigmoid(x)
float silu(float x);

// out[i] = silu(gate[i]) * up[i]; out may alias gate or up. swiglu_ref is the scalar form (for
// tests); swiglu runs the AVX-512 form where the CPU has it (e^x to about 1 ulp, like ggml's).
void swiglu(const float* gate, const float* up, int64_t n, float* out);
void swiglu_ref(const float* gate, const float* up, int64_t n, float* out);

// A row through f16, rounding to nearest even (fp32_to_fp16): to_fp16_row writes the f16 bits
// (rows of an f16 K/V cache or F16 weights), round_fp16_row the values rounded and widened back
// (what a product with f16 data sees of an activation). The _ref forms are the scalar loops
// (for tests); the others run vcvtps2ph where the CPU has AVX-512: one value at a time, a
// grouped-query attention's 8 x 128 query values took 2.5 us.
void to_fp16_row(const float* x, int64_t n, uint16_t* out);
void to_fp16_row_ref(const float* x, int64_t n, uint16_t* out);
void round_fp16_row(const float* x, int64_t n, float* out);
void round_fp16_row_ref(const float* x, int64_t n, float* out);

}  // namespace tandem
