// RMSNorm over rows of activations.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

// y[t] = x[t] / rms(x[t]) * w for t < n_tokens rows of n floats; w may be null. x may equal y.
void launch_rms_norm(const float* x, const float* w, int64_t n_tokens, int64_t n, float eps,
                     float* y, cudaStream_t stream);

}  // namespace tandem::cuda
