// Weighted combine of expert outputs into the residual rows they belong to.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace tandem::cuda {

// out[index[i]] += weight[i] * y[i] for i < n_rows, in order of i (so rows hit twice add in
// the CPU's order). A bad index is skipped and sets kErrorScatterIndex in *error_word.
void launch_scatter_add_weighted(const float* y, const int32_t* index, const float* weight,
                                 int64_t n_rows, int64_t width, float* out, int64_t n_out_rows,
                                 unsigned* error_word, cudaStream_t stream);

}  // namespace tandem::cuda
