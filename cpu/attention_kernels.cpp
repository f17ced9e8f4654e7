#include "cpu/attention_kernels.h"

#include "cpu/cpu_features.h"
#include "cpu/half.h"
#include "cpu/ops.h"

namespace tandem {

const AttentionKernels& attention_kernels_avx512();  // cpu/avx512/attention_avx512.cpp

namespace {

template <class K>
void scores_ref(const float* q, const K* k, int64_t stride, int64_t n_pos, int64_t dim, float scale,
                float* scores) {
  for (int64_t p = 0; p < n_pos; ++p) {
    const K* row = k + p * stride;
    float dot = 0.0f;
    for (int64_t i = 0; i < dim; ++i) {
      if constexpr (sizeof(K) == 2)
        dot += q[i] * fp16_to_fp32(row[i]);
      else
        dot += q[i] * row[i];
    }
    scores[p] = dot * scale;
  }
}

template <class V>
void weighted_sum_ref(const float* weights, const V* v, int64_t stride, int64_t n_pos, int64_t dim,
                      float* out) {
  for (int64_t i = 0; i < dim; ++i) out[i] = 0.0f;
  for (int64_t p = 0; p < n_pos; ++p) {
    const V* row = v + p * stride;
    for (int64_t i = 0; i < dim; ++i) {
      if constexpr (sizeof(V) == 2)
        out[i] += weights[p] * fp16_to_fp32(row[i]);
      else
        out[i] += weights[p] * row[i];
    }
  }
}

template <class KV>
void attend_heads_ref(const float* q, int64_t n_rep, const KV* k, const KV* v, int64_t stride,
                      int64_t n_pos, int64_t dim, float scale, float* scores, float* out) {
  for (int64_t r = 0; r < n_rep; ++r) {
    float* s = scores + r * n_pos;
    scores_ref(q + r * dim, k, stride, n_pos, dim, scale, s);
    softmax(s, n_pos);
    weighted_sum_ref(s, v, stride, n_pos, dim, out + r * dim);
  }
}

const AttentionKernels kReference = {scores_ref<float>,
                                     scores_ref<uint16_t>,
                                     weighted_sum_ref<float>,
                                     weighted_sum_ref<uint16_t>,
                                     softmax,
                                     attend_heads_ref<float>,
                                     attend_heads_ref<uint16_t>};

}  // namespace

const AttentionKernels& attention_kernels_ref() {
  return kReference;
}

const AttentionKernels& attention_kernels() {
  static const AttentionKernels& chosen =
      cpu_features().has_avx512_kernels() ? attention_kernels_avx512() : kReference;
  return chosen;
}

}  // namespace tandem
