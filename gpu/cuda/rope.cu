// One thread per rotated pair. The angle is built by the same repeated multiplication as the
// CPU's (kmath::rope_angle), so it is bit-identical; only cosf/sinf may differ by an ulp.
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/rope.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rope_kernel(RopeArgs a) {
  const int64_t half = a.n_rot / 2;
  const int64_t idx = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (idx >= a.n_tokens * a.n_heads * half) return;
  const int64_t i = idx % half;
  const int64_t head = idx / half;  // token * n_heads + head
  const int64_t t = head / a.n_heads;
  float* h = a.x + head * a.head_dim;
  const float angle = kmath::rope_angle(a.positions[t], a.theta_scale, a.freq_scale, i);
  int64_t p0, p1;
  kmath::rope_pair(i, a.n_rot, a.neox, &p0, &p1);
  kmath::rope_rotate(&h[p0], &h[p1], cosf(angle), sinf(angle));
}

}  // namespace

void launch_rope(const RopeArgs& args, cudaStream_t stream) {
  const int64_t n = args.n_tokens * args.n_heads * (args.n_rot / 2);
  if (n == 0) return;
  rope_kernel<<<grid_size(n, kThreads), kThreads, 0, stream>>>(args);
  CUDA_CHECK_LAUNCH("rope");
}

}  // namespace tandem::cuda
