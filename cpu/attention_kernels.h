// Inner loops of CPU attention: dot products of a query with cached keys and weighted sums of
// cached values, for f32 and f16 caches. Dispatched once to AVX-512 where the CPU has it.
#pragma once

#include <cstdint>

namespace tandem {

struct AttentionKernels {
  // scores[p] = scale * dot(q, k + p * stride) for p < n_pos (k: f32 rows)
  void (*scores_f32)(const float* q, const float* k, int64_t stride, int64_t n_pos, int64_t dim,
                     float scale, float* scores);
  // the same with f16 key rows (uint16_t bit patterns)
  void (*scores_f16)(const float* q, const uint16_t* k, int64_t stride, int64_t n_pos, int64_t dim,
                     float scale, float* scores);
  // out[i] = sum_p weights[p] * v[p * stride + i]
  void (*weighted_sum_f32)(const float* weights, const float* v, int64_t stride, int64_t n_pos,
                           int64_t dim, float* out);
  void (*weighted_sum_f16)(const float* weights, const uint16_t* v, int64_t stride, int64_t n_pos,
                           int64_t dim, float* out);
  // In-place softmax (max subtracted); exp accurate to about 1 ulp.
  void (*softmax)(float* x, int64_t n);
  // The n_rep query heads q[r * dim ...] that share one kv head, each as scores (scaled),
  // softmax and weighted sum above, into out[r * dim ...]; `scores` is scratch for n_rep * n_pos
  // floats. Equal bit for bit to those three calls per head: the fast version reads each cached
  // row once for all heads instead of once per head.
  void (*attend_heads_f32)(const float* q, int64_t n_rep, const float* k, const float* v,
                           int64_t stride, int64_t n_pos, int64_t dim, float scale, float* scores,
                           float* out);
  void (*attend_heads_f16)(const float* q, int64_t n_rep, const uint16_t* k, const uint16_t* v,
                           int64_t stride, int64_t n_pos, int64_t dim, float scale, float* scores,
                           float* out);
};

// The fastest kernels this CPU runs (chosen once).
const AttentionKernels& attention_kernels();
// The scalar reference kernels (for tests).
const AttentionKernels& attention_kernels_ref();

}  // namespace tandem
