#include "gpu/sim/sim_kernels.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/attention_kernels.h"
#include "cpu/ops.h"
#include "cpu/quant.h"

namespace tandem {

void sim_expert_ffn(const MatrixRef& gate, const MatrixRef& up, const MatrixRef& down,
                    const float* x, int64_t n_tokens, float* scratch, float* out) {
  const int64_t n = n_tokens * gate.n_rows;
  float* g = scratch;
  float* u = scratch + n;
  matmul(gate, x, n_tokens, g, nullptr);
  matmul(up, x, n_tokens, u, nullptr);
  swiglu(g, u, n, g);  // the CPU engine's function: the sim computes what the CPU would
  matmul(down, g, n_tokens, out, nullptr);
}

void sim_router_topk(const float* logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                     bool renormalize, int32_t* ids, float* weights) {
  std::vector<float> probs(static_cast<size_t>(n_expert));
  std::vector<int32_t> sel(static_cast<size_t>(n_expert));
  for (int64_t t = 0; t < n_tokens; ++t) {
    std::copy_n(logits + t * n_expert, n_expert, probs.begin());
    softmax(probs.data(), n_expert);
    std::iota(sel.begin(), sel.end(), 0);
    std::partial_sort(sel.begin(), sel.begin() + k, sel.end(), [&](int32_t a, int32_t b) {
      return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
    });
    float sum = 0.0f;
    for (int64_t j = 0; j < k; ++j) sum += probs[sel[j]];
    for (int64_t j = 0; j < k; ++j) {
      ids[t * k + j] = sel[j];
      weights[t * k + j] = renormalize ? probs[sel[j]] / sum : probs[sel[j]];
    }
  }
}

void sim_scatter_add_weighted(const float* y, const int32_t* index, const float* weight,
                              int64_t n_rows, int64_t width, float* out, int64_t n_out_rows) {
  for (int64_t i = 0; i < n_rows; ++i) {
    if (index[i] < 0 || index[i] >= n_out_rows) {
      throw std::out_of_range("scatter_add_weighted: index[" + std::to_string(i) +
                              "] = " + std::to_string(index[i]) + " is outside the " +
                              std::to_string(n_out_rows) + " output rows");
    }
    float* o = out + index[i] * width;
    const float* src = y + i * width;
    const float w = weight[i];
    // Product rounded first, then added: the CPU path's weight-then-combine order.
    for (int64_t c = 0; c < width; ++c) {
      const float p = src[c] * w;
      o[c] += p;
    }
  }
}

namespace {

// One query head against cache rows 0..n_pos-1 with the kernels the CPU path uses, so both
// agree bit for bit.
void attend_head(const float* qh, const float* k_cache, const float* v_cache, int64_t kv_dim,
                 int64_t kv_off, int64_t n_pos, int64_t head_dim, std::vector<float>& scores,
                 float* out) {
  const AttentionKernels& kern = attention_kernels();
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  scores.resize(static_cast<size_t>(n_pos));
  kern.scores_f32(qh, k_cache + kv_off, kv_dim, n_pos, head_dim, scale, scores.data());
  kern.softmax(scores.data(), n_pos);
  kern.weighted_sum_f32(scores.data(), v_cache + kv_off, kv_dim, n_pos, head_dim, out);
}

}  // namespace

void sim_attention(const float* q, const float* k, const float* v, float* k_cache, float* v_cache,
                   int64_t pos0, int64_t n_tokens, int64_t n_head, int64_t n_head_kv,
                   int64_t head_dim, float* out) {
  const int64_t kv_dim = n_head_kv * head_dim, q_dim = n_head * head_dim;
  std::copy_n(k, n_tokens * kv_dim, k_cache + pos0 * kv_dim);
  std::copy_n(v, n_tokens * kv_dim, v_cache + pos0 * kv_dim);
  const int64_t group = n_head / n_head_kv;
  std::vector<float> scores;
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t h = 0; h < n_head; ++h) {
      attend_head(q + t * q_dim + h * head_dim, k_cache, v_cache, kv_dim, (h / group) * head_dim,
                  pos0 + t + 1, head_dim, scores, out + t * q_dim + h * head_dim);
    }
  }
}

void sim_embedding(const MatrixRef& table, const int32_t* ids, int64_t n_tokens, float* y) {
  const auto* base = static_cast<const uint8_t*>(table.data);
  for (int64_t t = 0; t < n_tokens; ++t) {
    if (ids[t] < 0 || ids[t] >= table.n_rows) {
      throw std::out_of_range("embedding: id " + std::to_string(ids[t]) + " of token " +
                              std::to_string(t) + " is outside the table's " +
                              std::to_string(table.n_rows) + " rows");
    }
    dequantize_row(table.type, base + ids[t] * table.row_stride, y + t * table.n_cols,
                   table.n_cols);
  }
}

}  // namespace tandem
