#include "engine/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "cpu/arena.h"
#include "cpu/attention_kernels.h"
#include "cpu/ops.h"

namespace tandem {

KvCache::KvCache(int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim,
                 KvType type)
    : n_layer_(n_layer),
      n_seq_(n_seq),
      n_ctx_(n_ctx),
      n_head_kv_(n_head_kv),
      head_dim_(head_dim),
      type_(type) {
  const size_t n = static_cast<size_t>(n_layer) * n_seq * n_ctx * n_head_kv * head_dim;
  if (type == KvType::F32) {
    k32_.resize(n);
    v32_.resize(n);
  } else {
    k16_.resize(n);
    v16_.resize(n);
  }
}

size_t KvCache::index(int32_t layer, int32_t seq, int32_t head, int32_t pos) const {
  return (((static_cast<size_t>(layer) * n_seq_ + seq) * n_head_kv_ + head) * n_ctx_ + pos) *
         head_dim_;
}

uint64_t KvCache::bytes() const {
  return (k32_.size() + v32_.size()) * sizeof(float) +
         (k16_.size() + v16_.size()) * sizeof(uint16_t);
}

void KvCache::store(int32_t layer, std::span<const BatchEntry> batch, const float* k,
                    const float* v) {
  const int64_t kv_dim = static_cast<int64_t>(n_head_kv_) * head_dim_;
  for (size_t t = 0; t < batch.size(); ++t) {
    for (int32_t h = 0; h < n_head_kv_; ++h) {
      const size_t at = index(layer, batch[t].seq, h, batch[t].pos);
      const float* kr = k + t * kv_dim + h * head_dim_;
      const float* vr = v + t * kv_dim + h * head_dim_;
      if (type_ == KvType::F32) {
        std::copy_n(kr, head_dim_, k32_.data() + at);
        std::copy_n(vr, head_dim_, v32_.data() + at);
      } else {
        to_fp16_row(kr, head_dim_, k16_.data() + at);
        to_fp16_row(vr, head_dim_, v16_.data() + at);
      }
    }
  }
}

void rope_table(const ModelSpec& s, std::span<const BatchEntry> batch, std::vector<float>& out) {
  out.resize(batch.size() * static_cast<size_t>(s.n_rot));
  for (size_t t = 0; t < batch.size(); ++t) {
    rope_angles(s.n_rot, batch[t].pos, s.rope_freq_base, s.rope_freq_scale,
                out.data() + t * s.n_rot);
  }
}

void normalize_and_rotate_qk(const ModelSpec& s, const LayerWeights& w,
                             std::span<const BatchEntry> batch, const float* cos_sin, float* q,
                             float* k) {
  const bool neox = s.rope_style == RopeStyle::Neox;
  const auto* qn = reinterpret_cast<const float*>(w.q_norm.data);
  const auto* kn = reinterpret_cast<const float*>(w.k_norm.data);
  for (size_t t = 0; t < batch.size(); ++t) {
    const float* angles = cos_sin + t * s.n_rot;
    float* qt = q + t * s.q_dim();
    float* kt = k + t * s.kv_dim();
    if (s.qk_norm == QkNorm::Full) {
      rms_norm(qt, qn, s.q_dim(), s.rms_eps, qt);
      rms_norm(kt, kn, s.kv_dim(), s.rms_eps, kt);
    }
    for (int32_t h = 0; h < s.n_head; ++h) {
      float* head = qt + h * s.head_dim;
      if (s.qk_norm == QkNorm::PerHead) rms_norm(head, qn, s.head_dim, s.rms_eps, head);
      rope_rotate(head, s.n_rot, angles, neox);
    }
    for (int32_t h = 0; h < s.n_head_kv; ++h) {
      float* head = kt + h * s.head_dim;
      if (s.qk_norm == QkNorm::PerHead) rms_norm(head, kn, s.head_dim, s.rms_eps, head);
      rope_rotate(head, s.n_rot, angles, neox);
    }
  }
}

namespace {

// The n_rep query heads that share kv head `kv_head`, for one token: scores against every
// cached position up to the token's own, softmax, weighted sum of values. Each key and value
// row is read straight from the cache, once for all n_rep heads.
void attend_group(const ModelSpec& s, const KvCache& kv, int32_t layer, const BatchEntry& e,
                  int32_t kv_head, const float* q, float* out, std::vector<float>& scores,
                  std::vector<float>& q_rounded) {
  const AttentionKernels& kern = attention_kernels();
  const int64_t n_pos = e.pos + 1, hd = s.head_dim, stride = kv.head_dim();
  const int32_t n_rep = s.n_head / s.n_head_kv;
  const float scale = 1.0f / std::sqrt(static_cast<float>(hd));
  const float* qg = q + static_cast<int64_t>(kv_head) * n_rep * hd;
  float* og = out + static_cast<int64_t>(kv_head) * n_rep * hd;
  scores.resize(static_cast<size_t>(n_rep * n_pos));
  if (kv.type() == KvType::F16) {
    // An f16 cache sees an f16 query too, as llama.cpp's flash attention does.
    q_rounded.resize(static_cast<size_t>(n_rep * hd));
    round_fp16_row(qg, n_rep * hd, q_rounded.data());
    kern.attend_heads_f16(q_rounded.data(), n_rep, kv.keys_f16(layer, e.seq, kv_head),
                          kv.values_f16(layer, e.seq, kv_head), stride, n_pos, hd, scale,
                          scores.data(), og);
  } else {
    kern.attend_heads_f32(qg, n_rep, kv.keys_f32(layer, e.seq, kv_head),
                          kv.values_f32(layer, e.seq, kv_head), stride, n_pos, hd, scale,
                          scores.data(), og);
  }
}

}  // namespace

void attend(const ModelSpec& s, const KvCache& kv, int32_t layer, std::span<const BatchEntry> batch,
            const float* q, float* out, CpuArena* arena) {
  const int64_t n_items = static_cast<int64_t>(batch.size()) * s.n_head_kv;
  auto work = [&](int64_t lo, int64_t hi) {
    thread_local std::vector<float> scores, q_rounded;
    for (int64_t i = lo; i < hi; ++i) {
      const int64_t t = i / s.n_head_kv;
      const int32_t g = static_cast<int32_t>(i % s.n_head_kv);
      attend_group(s, kv, layer, batch[t], g, q + t * s.q_dim(), out + t * s.q_dim(), scores,
                   q_rounded);
    }
  };
  if (arena) {
    arena->parallel_for(0, n_items, 1, work);
  } else {
    work(0, n_items);
  }
}

}  // namespace tandem
