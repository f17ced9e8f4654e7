// One thread per output element: the element's block is found and dequantized with the
// per-element value of gpu/kernel_math.h (the same expression as cpu/quant.h's dequantize_row).
#include <string>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/embedding.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

constexpr int kThreads = 256;

// Rows come from ids when ids is not null, else from first_row onwards. Grid: x over the
// columns of a row, y over the output rows.
template <class T>
__global__ void dequantize_rows_kernel(const uint8_t* base, int64_t row_stride, int64_t n_rows,
                                       int64_t n_cols, const int32_t* ids, int64_t first_row,
                                       float* out, unsigned* error_word) {
  const int64_t col = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t i = blockIdx.y;
  if (col >= n_cols) return;
  const int64_t row = ids ? ids[i] : first_row + i;
  float* o = out + i * n_cols;
  if (row < 0 || row >= n_rows) {
    o[col] = 0.0f;
    if (col == 0) atomicOr(error_word, kErrorEmbeddingId);
    return;
  }
  const auto* blocks = reinterpret_cast<const typename T::Block*>(base + row * row_stride);
  o[col] = T::value(blocks[col / T::kElems], static_cast<int>(col % T::kElems));
}

template <class T>
void dequantize_rows(const RowSource& s, const int32_t* ids, int64_t first_row, int64_t n_out,
                     float* out, unsigned* error_word, cudaStream_t stream) {
  for (int64_t done = 0; done < n_out; done += 65535) {  // grid.y limit
    const int64_t n = n_out - done < 65535 ? n_out - done : 65535;
    const dim3 grid(grid_size(s.n_cols, kThreads), static_cast<unsigned>(n));
    dequantize_rows_kernel<T><<<grid, kThreads, 0, stream>>>(
        static_cast<const uint8_t*>(s.base), s.row_stride, s.n_rows, s.n_cols,
        ids ? ids + done : nullptr, first_row + done, out + done * s.n_cols, error_word);
    CUDA_CHECK_LAUNCH("dequantize_rows");
  }
}

void dispatch(const RowSource& s, const int32_t* ids, int64_t first_row, int64_t n_out, float* out,
              unsigned* error_word, cudaStream_t stream) {
#define TANDEM_DEQUANT_CASE(name, traits) \
  case GgmlType::name:                    \
    return dequantize_rows<kmath::traits>(s, ids, first_row, n_out, out, error_word, stream);
  switch (s.type) {
    TANDEM_KMATH_FLOAT_TYPES(TANDEM_DEQUANT_CASE)
    TANDEM_KMATH_QUANT_TYPES(TANDEM_DEQUANT_CASE)
    default:
      break;
  }
#undef TANDEM_DEQUANT_CASE
  throw AcceleratorError("CUDA dequantize: unsupported type " + std::string(type_name(s.type)));
}

}  // namespace

void launch_embedding(const RowSource& table, const int32_t* ids, int64_t n_ids, float* out,
                      unsigned* error_word, cudaStream_t stream) {
  dispatch(table, ids, 0, n_ids, out, error_word, stream);
}

void launch_dequantize_rows(const RowSource& src, int64_t first_row, int64_t n_out_rows, float* out,
                            cudaStream_t stream) {
  dispatch(src, nullptr, first_row, n_out_rows, out, nullptr, stream);
}

}  // namespace tandem::cuda
