#include <string>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/elementwise.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void silu_mul_kernel(float* gate, const float* up, int64_t n) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) gate[i] = kmath::silu(gate[i]) * up[i];
}

__global__ void round_floats_kernel(const float* x, int64_t n, bool bf16, float* out) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (i < n) out[i] = bf16 ? round_bf16(x[i]) : round_fp16(x[i]);
}

}  // namespace

void launch_silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream) {
  if (n <= 0) return;
  silu_mul_kernel<<<grid_size(n, kThreads), kThreads, 0, stream>>>(gate, up, n);
  CUDA_CHECK_LAUNCH("silu_mul");
}

void launch_round_floats(GgmlType type, const float* x, int64_t n, float* out,
                         cudaStream_t stream) {
  if (type != GgmlType::F16 && type != GgmlType::BF16) {
    throw AcceleratorError("CUDA round_floats: " + std::string(type_name(type)) +
                           " is not f16/bf16");
  }
  if (n <= 0) return;
  round_floats_kernel<<<grid_size(n, kThreads), kThreads, 0, stream>>>(x, n, type == GgmlType::BF16,
                                                                       out);
  CUDA_CHECK_LAUNCH("round_floats");
}

}  // namespace tandem::cuda
