// MoE router: per token, softmax over the expert logits and the k most probable experts.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

// Largest n_expert the kernel's shared memory holds.
constexpr int64_t kMaxRouterExperts = 8192;

// ids/weights: [n_tokens][k]; ties go to the lower expert id; weights renormalised to sum 1
// when renormalize (the CPU twin is sim_router_topk).
void launch_router_topk(const float* logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                        bool renormalize, int32_t* ids, float* weights, cudaStream_t stream);

}  // namespace tandem::cuda
