// Element-wise kernels of the expert FFN and the GEMM path.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/quant_types.h"

namespace tandem::cuda {

// gate[i] = silu(gate[i]) * up[i] for i < n.
void launch_silu_mul(float* gate, const float* up, int64_t n, cudaStream_t stream);

// out[i] = x[i] rounded through `type` (F16 or BF16) and back, as the CPU rounds activations
// before a dot with f16/bf16 weights.
void launch_round_floats(GgmlType type, const float* x, int64_t n, float* out, cudaStream_t stream);

}  // namespace tandem::cuda
