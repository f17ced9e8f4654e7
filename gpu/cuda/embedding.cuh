// Rows of a weight matrix dequantized to f32: gathered by token id (embedding lookup) or a
// contiguous range (the GEMM path's scratch copy of a weight chunk).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "cpu/quant_types.h"

namespace tandem::cuda {

struct RowSource {
  GgmlType type;
  const void* base;  // row r at base + r * row_stride bytes
  int64_t row_stride;
  int64_t n_rows;  // rows in the table (ids are checked against it)
  int64_t n_cols;
};

// out[i] = row ids[i] for i < n_ids. An id outside the table leaves its output row zero and
// sets kErrorEmbeddingId in *error_word.
void launch_embedding(const RowSource& table, const int32_t* ids, int64_t n_ids, float* out,
                      unsigned* error_word, cudaStream_t stream);

// out[i] = row first_row + i for i < n_out_rows.
void launch_dequantize_rows(const RowSource& src, int64_t first_row, int64_t n_out_rows, float* out,
                            cudaStream_t stream);

}  // namespace tandem::cuda
