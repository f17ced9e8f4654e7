// Weight x activation products for the engine: every linear layer and expert goes through here.
#pragma once

#include <cstdint>
#include <span>
#include <string_view>

#include "cpu/quant_types.h"

namespace tandem {

class CpuArena;

// y[t * n_rows + r] = dot(row r of w, x[t * n_cols ...]) for t < n_tokens.  Activations are first
// converted to vec_dot_type(w.type) (once per token row), then dotted like llama.cpp. arena may be
// null (single-threaded). No allocation per call in steady state (reuse thread-local scratch).
// Results are bit-for-bit deterministic: they do not depend on the thread count.
void matmul(const MatrixRef& w, const float* x, int64_t n_tokens, float* y, CpuArena* arena);

// One product of a batch: y = w x for n_tokens rows of x, as matmul computes it.
struct MatmulJob {
  MatrixRef w;
  const float* x;
  int64_t n_tokens;
  float* y;
};

// Runs every job, results bit-for-bit equal to calling matmul per job. The jobs' activations are
// packed once (jobs sharing x and layout share the pack) and all their rows go to the arena as
// one parallel loop: one fork/join for the batch instead of two per product, which is what
// decides the speed of many small products (an MoE layer's experts in decode).
void matmul_many(std::span<const MatmulJob> jobs, CpuArena* arena);

// Same contract, always the scalar reference path (for tests).
void matmul_ref(const MatrixRef& w, const float* x, int64_t n_tokens, float* y);

// Name of the kernel matmul uses for `type` on this CPU ("avx512-vnni q8_0", "reference").
std::string_view matmul_kernel_name(GgmlType type);

}  // namespace tandem
