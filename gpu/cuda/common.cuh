// Shared by every CUDA source of the backend: error checks that throw AcceleratorError naming
// the call, file and line, the device-side error codes, and warp/block reduction helpers.
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <string>

#include "gpu/accelerator.h"

namespace tandem::cuda {

[[noreturn]] inline void throw_cuda_error(const char* call, const char* file, int line,
                                          const std::string& what) {
  throw AcceleratorError(std::string("CUDA: ") + call + " failed at " + file + ":" +
                         std::to_string(line) + ": " + what);
}

}  // namespace tandem::cuda

#define CUDA_CHECK(call)                                                                        \
  do {                                                                                          \
    const cudaError_t tandem_cuda_err_ = (call);                                                \
    if (tandem_cuda_err_ != cudaSuccess) {                                                      \
      ::tandem::cuda::throw_cuda_error(#call, __FILE__, __LINE__,                               \
                                       std::string(cudaGetErrorName(tandem_cuda_err_)) + " (" + \
                                           cudaGetErrorString(tandem_cuda_err_) + ")");         \
    }                                                                                           \
  } while (0)

#define CUBLAS_CHECK(call)                                                                   \
  do {                                                                                       \
    const cublasStatus_t tandem_cublas_st_ = (call);                                         \
    if (tandem_cublas_st_ != CUBLAS_STATUS_SUCCESS) {                                        \
      ::tandem::cuda::throw_cuda_error(#call, __FILE__, __LINE__,                            \
                                       std::string(cublasGetStatusName(tandem_cublas_st_))); \
    }                                                                                        \
  } while (0)

// After a <<<...>>> launch: configuration errors surface here, at the launching line.
#define CUDA_CHECK_LAUNCH(name) CUDA_CHECK(cudaGetLastError())

namespace tandem::cuda {

// Bits a kernel ORs into the accelerator's device error word; reported at synchronize().
enum DeviceErrorBits : unsigned {
  kErrorEmbeddingId = 1u,   // embedding: an id outside the table
  kErrorScatterIndex = 2u,  // scatter_add_weighted: an index outside the output rows
};

inline unsigned grid_size(int64_t n, int64_t per_block) {
  return static_cast<unsigned>((n + per_block - 1) / per_block);
}

#if defined(__CUDACC__)
constexpr unsigned kFullMask = 0xffffffffu;

template <class T>
__device__ inline T warp_sum(T v) {
  for (int offset = 16; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

__device__ inline float warp_max(float v) {
  for (int offset = 16; offset > 0; offset >>= 1)
    v = fmaxf(v, __shfl_xor_sync(kFullMask, v, offset));
  return v;
}

// Sum over aligned groups of `width` lanes (a power of two up to 32); every lane gets its sum.
template <class T>
__device__ inline T group_sum(T v, int width) {
  for (int offset = width / 2; offset > 0; offset >>= 1) v += __shfl_xor_sync(kFullMask, v, offset);
  return v;
}

// Block-wide sum for blockDim.x a multiple of 32 (up to 1024); every thread gets the result.
template <class T>
__device__ inline T block_sum(T v, T* shared32) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) shared32[warp] = v;
  __syncthreads();
  const int n_warps = blockDim.x >> 5;
  T total = 0;
  for (int w = 0; w < n_warps; ++w) total += shared32[w];  // fixed order: deterministic
  __syncthreads();
  return total;
}
#endif

}  // namespace tandem::cuda
