// One thread per column walks the rows in order: no atomics, deterministic, and each output
// element sees the same sequence of additions as on the CPU (product rounded, then added).
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/scatter.cuh"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void scatter_add_weighted_kernel(const float* y, const int32_t* index,
                                            const float* weight, int64_t n_rows, int64_t width,
                                            float* out, int64_t n_out_rows, unsigned* error_word) {
  const int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= width) return;
  for (int64_t i = 0; i < n_rows; ++i) {
    const int64_t r = index[i];
    if (r < 0 || r >= n_out_rows) {
      if (c == 0) atomicOr(error_word, kErrorScatterIndex);
      continue;
    }
    const float p = y[i * width + c] * weight[i];
    out[r * width + c] += p;
  }
}

}  // namespace

void launch_scatter_add_weighted(const float* y, const int32_t* index, const float* weight,
                                 int64_t n_rows, int64_t width, float* out, int64_t n_out_rows,
                                 unsigned* error_word, cudaStream_t stream) {
  if (n_rows == 0) return;
  scatter_add_weighted_kernel<<<grid_size(width, kThreads), kThreads, 0, stream>>>(
      y, index, weight, n_rows, width, out, n_out_rows, error_word);
  CUDA_CHECK_LAUNCH("scatter_add_weighted");
}

}  // namespace tandem::cuda
