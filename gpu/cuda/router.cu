// One warp per token: softmax with the CPU's order of operations (max, expf, sum in double,
// one reciprocal), then k rounds of a warp arg-max. The selected weights are summed by lane 0
// in selection order, as the CPU does.
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/router.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

__global__ void router_topk_kernel(const float* logits, int64_t n_expert, int64_t k,
                                   bool renormalize, int32_t* ids, float* weights) {
  extern __shared__ float probs[];  // n_expert
  const int lane = threadIdx.x;
  const float* l = logits + static_cast<int64_t>(blockIdx.x) * n_expert;
  float max = -INFINITY;
  for (int64_t e = lane; e < n_expert; e += 32) max = fmaxf(max, l[e]);
  max = warp_max(max);
  double sum = 0.0;
  for (int64_t e = lane; e < n_expert; e += 32) {
    probs[e] = kmath::exp_f(l[e] - max);
    sum += static_cast<double>(probs[e]);
  }
  const float inv = static_cast<float>(1.0 / warp_sum(sum));
  for (int64_t e = lane; e < n_expert; e += 32) probs[e] *= inv;
  __syncwarp();
  int32_t* out_ids = ids + static_cast<int64_t>(blockIdx.x) * k;
  float* out_w = weights + static_cast<int64_t>(blockIdx.x) * k;
  for (int64_t j = 0; j < k; ++j) {
    float best = -1.0f;  // probabilities are >= 0; taken experts are marked -1
    int best_id = 0x7fffffff;
    for (int64_t e = lane; e < n_expert; e += 32) {
      if (probs[e] > best) {
        best = probs[e];
        best_id = static_cast<int>(e);
      }
    }
    for (int offset = 16; offset > 0; offset >>= 1) {
      const float o_best = __shfl_xor_sync(kFullMask, best, offset);
      const int o_id = __shfl_xor_sync(kFullMask, best_id, offset);
      if (o_best > best || (o_best == best && o_id < best_id)) {
        best = o_best;
        best_id = o_id;
      }
    }
    if (lane == 0) {
      out_ids[j] = best_id;
      out_w[j] = best;
      probs[best_id] = -1.0f;
    }
    __syncwarp();
  }
  if (lane == 0 && renormalize) {
    float total = 0.0f;
    for (int64_t j = 0; j < k; ++j) total += out_w[j];
    for (int64_t j = 0; j < k; ++j) out_w[j] = out_w[j] / total;
  }
}

}  // namespace

void launch_router_topk(const float* logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                        bool renormalize, int32_t* ids, float* weights, cudaStream_t stream) {
  const size_t shared = static_cast<size_t>(n_expert) * sizeof(float);
  router_topk_kernel<<<static_cast<unsigned>(n_tokens), 32, shared, stream>>>(
      logits, n_expert, k, renormalize, ids, weights);
  CUDA_CHECK_LAUNCH("router_topk");
}

}  // namespace tandem::cuda
