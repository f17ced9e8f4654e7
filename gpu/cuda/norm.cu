// One block per row. The sum of squares is accumulated in double like the CPU's (each square
// rounded to float first), so the scale matches the CPU's up to the order of the double sum.
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/norm.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void rms_norm_kernel(const float* x, const float* w, int64_t n, float eps, float* y) {
  __shared__ double partial[32];
  const float* xr = x + static_cast<int64_t>(blockIdx.x) * n;
  float* yr = y + static_cast<int64_t>(blockIdx.x) * n;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float sq = xr[i] * xr[i];
    sum += static_cast<double>(sq);
  }
  const float scale = kmath::rms_scale(block_sum(sum, partial), n, eps);
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x)
    yr[i] = kmath::rms_apply(xr[i], scale, w, i);
}

}  // namespace

void launch_rms_norm(const float* x, const float* w, int64_t n_tokens, int64_t n, float eps,
                     float* y, cudaStream_t stream) {
  rms_norm_kernel<<<static_cast<unsigned>(n_tokens), kThreads, 0, stream>>>(x, w, n, eps, y);
  CUDA_CHECK_LAUNCH("rms_norm");
}

}  // namespace tandem::cuda
