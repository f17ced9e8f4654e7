#include "cpu/matmul.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/arena.h"
#include "cpu/cpu_features.h"
#include "cpu/kernels.h"
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

// Scratch per calling thread and nesting depth, grown to the largest request and then reused:
// no steady-state allocation. The depth matters because a thread waiting inside parallel_for
// may steal another task that calls matmul again before the outer call is done with its buffer.
thread_local int tls_depth = 0;

struct DepthGuard {
  DepthGuard() { ++tls_depth; }
  ~DepthGuard() { --tls_depth; }
  DepthGuard(const DepthGuard&) = delete;
  DepthGuard& operator=(const DepthGuard&) = delete;
};

uint8_t* scratch(int64_t bytes) {
  thread_local std::vector<std::vector<uint8_t>> buffers;
  if (buffers.size() < static_cast<size_t>(tls_depth) + 1) buffers.resize(tls_depth + 1);
  std::vector<uint8_t>& buffer = buffers[tls_depth];
  const size_t need = static_cast<size_t>(bytes) + 64;
  if (buffer.size() < need) buffer.resize(need);
  const auto addr = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - addr % 64) % 64);
}

// Activations of all tokens converted to the weight's vec_dot type, one row per token.
const uint8_t* quantize_activations(const MatrixRef& w, const float* x, int64_t n_tokens,
                                    int64_t* act_stride) {
  const GgmlType at = vec_dot_type(w.type);
  *act_stride = row_bytes(at, w.n_cols);
  uint8_t* act = scratch(*act_stride * n_tokens);
  for (int64_t t = 0; t < n_tokens; ++t) {
    quantize_row(at, x + t * w.n_cols, act + t * *act_stride, w.n_cols);
  }
  return act;
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

// Rows per parallel chunk: about 4 chunks per thread (load balance), in whole 16-row blocks
// once chunks are that large (the kernels' row block).
int64_t row_grain(int64_t n_rows, int n_threads) {
  const int64_t chunks = 4 * static_cast<int64_t>(n_threads);
  const int64_t grain = (n_rows + chunks - 1) / chunks;
  return grain < 16 ? std::max<int64_t>(grain, 1) : (grain + 15) / 16 * 16;
}

void matmul_fast(const FastKernel& k, const MatrixRef& w, const float* x, int64_t n_tokens,
                 float* y, CpuArena* arena) {
  uint8_t* buf = scratch(act_pack_bytes(k.layout, w.n_cols, n_tokens));
  ActPack act;
  const int n_threads = arena ? arena->n_threads() : 1;
  if (n_threads > 1 && n_tokens > 1) {
    arena->parallel_for(0, n_tokens, (n_tokens + 2 * n_threads - 1) / (2 * n_threads),
                        [&](int64_t lo, int64_t hi) {
                          ActPack part;
                          pack_activations(k.layout, x, w.n_cols, n_tokens, lo, hi, buf, &part);
                        });
    pack_activations(k.layout, x, w.n_cols, n_tokens, 0, 0, buf, &act);  // pointers only
  } else {
    pack_activations(k.layout, x, w.n_cols, n_tokens, 0, n_tokens, buf, &act);
  }
  auto run = [&](int64_t lo, int64_t hi) { k.run(w, act, lo, hi, 0, n_tokens, y, w.n_rows); };
  if (n_threads == 1) return run(0, w.n_rows);
  arena->parallel_for(0, w.n_rows, row_grain(w.n_rows, n_threads), run);
}

}  // namespace

void matmul_ref(const MatrixRef& w, const float* x, int64_t n_tokens, float* y) {
  check_matrix(w);
  const DepthGuard depth;
  int64_t act_stride = 0;
  const uint8_t* act = quantize_activations(w, x, n_tokens, &act_stride);
  dot_rows_ref(w, act, act_stride, n_tokens, y, 0, w.n_rows);
}

void matmul(const MatrixRef& w, const float* x, int64_t n_tokens, float* y, CpuArena* arena) {
  check_matrix(w);
  if (n_tokens <= 0 || w.n_rows <= 0) return;
  const DepthGuard depth;
  if (const FastKernel* k = find_fast_kernel(w.type, cpu_features())) {
    return matmul_fast(*k, w, x, n_tokens, y, arena);
  }
  int64_t act_stride = 0;
  const uint8_t* act = quantize_activations(w, x, n_tokens, &act_stride);
  auto run = [&](int64_t lo, int64_t hi) { dot_rows_ref(w, act, act_stride, n_tokens, y, lo, hi); };
  if (!arena || arena->n_threads() == 1) return run(0, w.n_rows);
  arena->parallel_for(0, w.n_rows, row_grain(w.n_rows, arena->n_threads()), run);
}

std::string_view matmul_kernel_name(GgmlType type) {
  const FastKernel* k = find_fast_kernel(type, cpu_features());
  return k ? k->name : "reference";
}

}  // namespace tandem
