// Rotary position embedding, in place.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

struct RopeArgs {
  float* x;                  // [n_tokens][n_heads][head_dim]
  const int32_t* positions;  // [n_tokens]
  int64_t n_tokens, n_heads, head_dim, n_rot;
  float theta_scale;  // kmath::rope_theta_scale(freq_base, n_rot), computed on the host
  float freq_scale;
  bool neox;
};

void launch_rope(const RopeArgs& args, cudaStream_t stream);

}  // namespace tandem::cuda
