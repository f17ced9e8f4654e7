// Causal attention over an f32 KV cache in device memory, for decode (1 token) and prefill.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

// Largest head dimension the kernel keeps in registers (8 values per lane).
constexpr int64_t kMaxHeadDim = 256;

struct AttentionArgs {
  const float* q;        // [n_tokens][n_head * head_dim]
  const float* k_cache;  // [n_ctx][n_head_kv * head_dim], rows 0..pos0+n_tokens-1 filled
  const float* v_cache;
  int64_t pos0, n_tokens, n_head, n_head_kv, head_dim;
  float scale;  // 1 / sqrt(head_dim), computed on the host as the CPU does
  float* out;   // [n_tokens][n_head * head_dim]
};

// Token t of the batch attends to cache rows 0..pos0+t (the caller appended k, v first).
void launch_attention(const AttentionArgs& args, cudaStream_t stream);

}  // namespace tandem::cuda
