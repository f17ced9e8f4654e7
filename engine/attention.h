// Grouped-query attention over a per-sequence KV cache, plus the q/k normalisation and RoPE
// that precede it.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "engine/engine.h"
#include "engine/model.h"

namespace tandem {

class CpuArena;

// K and V of every layer, sequence and position: [layer][seq][pos][kv_dim], in f32 or f16.
class KvCache {
 public:
  KvCache(int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t kv_dim, KvType type);

  // Writes the batch's k and v rows ([n_tokens][kv_dim]) at their (seq, pos).
  void store(int32_t layer, std::span<const BatchEntry> batch, const float* k, const float* v);
  // Row of kv_dim values as floats (converted when the cache is f16) into out.
  void load_k(int32_t layer, int32_t seq, int32_t pos, float* out) const;
  void load_v(int32_t layer, int32_t seq, int32_t pos, float* out) const;

  KvType type() const { return type_; }
  int32_t kv_dim() const { return kv_dim_; }
  uint64_t bytes() const;

 private:
  size_t index(int32_t layer, int32_t seq, int32_t pos) const;
  int32_t n_layer_, n_seq_, n_ctx_, kv_dim_;
  KvType type_;
  std::vector<float> k32_, v32_;
  std::vector<uint16_t> k16_, v16_;
};

// Per-head or full RMSNorm of q and k (as the architecture says), then RoPE at each token's
// position. q: [n_tokens][q_dim], k: [n_tokens][kv_dim], in place.
void normalize_and_rotate_qk(const ModelSpec& spec, const LayerWeights& w,
                             std::span<const BatchEntry> batch, float* q, float* k);

// out[t] = softmax(q[t] . K^T / sqrt(head_dim)) V over positions 0..pos of t's sequence.
void attend(const ModelSpec& spec, const KvCache& kv, int32_t layer,
            std::span<const BatchEntry> batch, const float* q, float* out, CpuArena* arena);

}  // namespace tandem
