// Host twins of the device ops that have no single CPU kernel: built from the CPU kernels
// (cpu/matmul.h, cpu/ops.h) in the same order of operations as the engine's CPU path, so the
// sim accelerator's results equal CPU-only results bit for bit.
#pragma once

#include <cstdint>

#include "cpu/matmul.h"

namespace tandem {

// out[t] = down(silu(gate x[t]) * up x[t]). scratch: 2 * n_tokens * gate.n_rows floats.
void sim_expert_ffn(const MatrixRef& gate, const MatrixRef& up, const MatrixRef& down,
                    const float* x, int64_t n_tokens, float* scratch, float* out);

// Per token: softmax over n_expert logits, the k most probable experts (ties: lower id first),
// weights = probabilities, divided by their sum when renormalize. ids/weights: [n_tokens][k].
void sim_router_topk(const float* logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                     bool renormalize, int32_t* ids, float* weights);

// out[index[i]] += weight[i] * y[i] for i in order; out has n_out_rows rows of width floats.
// Throws std::out_of_range naming a bad index.
void sim_scatter_add_weighted(const float* y, const int32_t* index, const float* weight,
                              int64_t n_rows, int64_t width, float* out, int64_t n_out_rows);

// Appends k, v ([n_tokens][n_head_kv*head_dim]) to the caches at rows pos0.., then causal
// attention of each query head over cache rows 0..pos0+t.
void sim_attention(const float* q, const float* k, const float* v, float* k_cache, float* v_cache,
                   int64_t pos0, int64_t n_tokens, int64_t n_head, int64_t n_head_kv,
                   int64_t head_dim, float* out);

// y[t] = row ids[t] of table as floats. Throws std::out_of_range naming a bad id.
void sim_embedding(const MatrixRef& table, const int32_t* ids, int64_t n_tokens, float* y);

}  // namespace tandem
