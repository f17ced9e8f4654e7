#include "cpu/matmul.h"

#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/arena.h"
#include "cpu/quant.h"

namespace tandem {
namespace {

void check_matrix(const MatrixRef& w) {
  const TypeTraits& t = traits(w.type);
  if (w.n_cols % t.block_elems != 0) {
    throw std::invalid_argument("matmul: row length " + std::to_string(w.n_cols) +
                                " is not a multiple of the " + std::string(t.name) +
                                " block size " + std::to_string(t.block_elems));
  }
  if (w.row_stride < row_bytes(w.type, w.n_cols)) {
    throw std::invalid_argument("matmul: row stride " + std::to_string(w.row_stride) +
                                " is smaller than a row of " + std::to_string(w.n_cols) + " " +
                                std::string(t.name) + " elements");
  }
}

// Activations of all tokens converted to the weight's vec_dot type, one row per token.
// Thread-local so steady-state calls do not allocate.
const uint8_t* quantize_activations(const MatrixRef& w, const float* x, int64_t n_tokens,
                                    int64_t* act_stride) {
  thread_local std::vector<uint8_t> scratch;
  const GgmlType at = vec_dot_type(w.type);
  *act_stride = row_bytes(at, w.n_cols);
  const size_t need = static_cast<size_t>(*act_stride * n_tokens);
  if (scratch.size() < need) scratch.resize(need);
  for (int64_t t = 0; t < n_tokens; ++t) {
    quantize_row(at, x + t * w.n_cols, scratch.data() + t * *act_stride, w.n_cols);
  }
  return scratch.data();
}

void dot_rows_ref(const MatrixRef& w, const uint8_t* act, int64_t act_stride, int64_t n_tokens,
                  float* y, int64_t row_lo, int64_t row_hi) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t r = row_lo; r < row_hi; ++r) {
    for (int64_t t = 0; t < n_tokens; ++t) {
      y[t * w.n_rows + r] =
          vec_dot_ref(w.type, w.n_cols, base + r * w.row_stride, act + t * act_stride);
    }
  }
}

}  // namespace

void matmul_ref(const MatrixRef& w, const float* x, int64_t n_tokens, float* y) {
  check_matrix(w);
  int64_t act_stride = 0;
  const uint8_t* act = quantize_activations(w, x, n_tokens, &act_stride);
  dot_rows_ref(w, act, act_stride, n_tokens, y, 0, w.n_rows);
}

void matmul(const MatrixRef& w, const float* x, int64_t n_tokens, float* y, CpuArena* arena) {
  check_matrix(w);
  int64_t act_stride = 0;
  const uint8_t* act = quantize_activations(w, x, n_tokens, &act_stride);
  auto run = [&](int64_t lo, int64_t hi) { dot_rows_ref(w, act, act_stride, n_tokens, y, lo, hi); };
  if (!arena || arena->n_threads() == 1) return run(0, w.n_rows);
  const int64_t grain = (w.n_rows + 4 * arena->n_threads() - 1) / (4 * arena->n_threads());
  arena->parallel_for(0, w.n_rows, grain, run);
}

}  // namespace tandem
