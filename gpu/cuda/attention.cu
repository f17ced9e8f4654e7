// One block of kWarps warps per (query head, token). Each warp takes every kWarps-th cache
// position and keeps an online softmax (kmath::online_softmax_step) with its accumulator in
// registers (lane l holds dims l, l+32, ...); the warps' states are merged at the end.
#include "gpu/cuda/attention.cuh"
#include "gpu/cuda/common.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

constexpr int kWarps = 4;
constexpr int kPerLane = static_cast<int>(kMaxHeadDim / 32);

__global__ void attention_kernel(AttentionArgs a) {
  __shared__ float acc_shared[kWarps][kMaxHeadDim];
  __shared__ float m_shared[kWarps], l_shared[kWarps];  // each warp's SoftmaxState
  const int64_t h = blockIdx.x, t = blockIdx.y;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int64_t q_dim = a.n_head * a.head_dim, kv_dim = a.n_head_kv * a.head_dim;
  const int64_t kv_off = (h / (a.n_head / a.n_head_kv)) * a.head_dim;
  const float* qh = a.q + t * q_dim + h * a.head_dim;
  float q[kPerLane], acc[kPerLane];
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    q[i] = d < a.head_dim ? qh[d] : 0.0f;
    acc[i] = 0.0f;
  }
  kmath::SoftmaxState st;
  const int64_t n_pos = a.pos0 + t + 1;
  for (int64_t p = warp; p < n_pos; p += kWarps) {
    const float* kr = a.k_cache + p * kv_dim + kv_off;
    float dot = 0.0f;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < a.head_dim) dot += q[i] * kr[d];
    }
    const float score = warp_sum(dot) * a.scale;
    float corr, prob;
    kmath::online_softmax_step(&st, score, &corr, &prob);
    const float* vr = a.v_cache + p * kv_dim + kv_off;
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < a.head_dim) acc[i] = acc[i] * corr + prob * vr[d];
    }
  }
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < a.head_dim) acc_shared[warp][d] = acc[i];
  }
  if (lane == 0) {
    m_shared[warp] = st.m;
    l_shared[warp] = st.l;
  }
  __syncthreads();
  if (warp != 0) return;
  kmath::SoftmaxState total = st;
  for (int w = 1; w < kWarps; ++w) {
    kmath::SoftmaxState other;
    other.m = m_shared[w];
    other.l = l_shared[w];
    float ca, cb;
    kmath::online_softmax_merge(&total, other, &ca, &cb);
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int64_t d = lane + 32 * i;
      if (d < a.head_dim) acc[i] = acc[i] * ca + acc_shared[w][d] * cb;
    }
  }
  float* o = a.out + t * q_dim + h * a.head_dim;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) {
    const int64_t d = lane + 32 * i;
    if (d < a.head_dim) o[d] = acc[i] / total.l;
  }
}

}  // namespace

void launch_attention(const AttentionArgs& args, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(args.n_head), static_cast<unsigned>(args.n_tokens));
  attention_kernel<<<grid, 32 * kWarps, 0, stream>>>(args);
  CUDA_CHECK_LAUNCH("attention");
}

}  // namespace tandem::cuda
