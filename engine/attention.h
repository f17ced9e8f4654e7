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
  KvCache(int32_t n_layer, int32_t n_seq, int32_t n_ctx, int32_t n_head_kv, int32_t head_dim,
          KvType type);

  // Writes the batch's k and v rows ([n_tokens][kv_dim]) at their (seq, pos).
  void store(int32_t layer, std::span<const BatchEntry> batch, const float* k, const float* v);
  // Position 0 of one kv head's keys / values for a sequence in one layer: rows of head_dim
  // elements, one per position, in f32 (the *_f32 forms, for an F32 cache) or f16 bit patterns
  // (the *_f16 forms). Each head's rows follow each other, so attention reads one forward
  // stream per head: with positions outermost, a head's 256-512 bytes every kv_dim elements
  // came from DRAM at about 9 GB/s on one core (4096 positions, f16).
  const float* keys_f32(int32_t layer, int32_t seq, int32_t head) const {
    return k32_.data() + index(layer, seq, head, 0);
  }
  const float* values_f32(int32_t layer, int32_t seq, int32_t head) const {
    return v32_.data() + index(layer, seq, head, 0);
  }
  const uint16_t* keys_f16(int32_t layer, int32_t seq, int32_t head) const {
    return k16_.data() + index(layer, seq, head, 0);
  }
  const uint16_t* values_f16(int32_t layer, int32_t seq, int32_t head) const {
    return v16_.data() + index(layer, seq, head, 0);
  }

  KvType type() const { return type_; }
  int32_t head_dim() const { return head_dim_; }
  uint64_t bytes() const;

 private:
  size_t index(int32_t layer, int32_t seq, int32_t head, int32_t pos) const;
  int32_t n_layer_, n_seq_, n_ctx_, n_head_kv_, head_dim_;
  KvType type_;
  std::vector<float> k32_, v32_;
  std::vector<uint16_t> k16_, v16_;
};

// RoPE's cos/sin pairs at each token's position, [n_tokens][n_rot]: the same for every layer,
// so a forward pass computes them once.
void rope_table(const ModelSpec& spec, std::span<const BatchEntry> batch, std::vector<float>& out);

// Per-head or full RMSNorm of q and k (as the architecture says), then RoPE at each token's
// position (`cos_sin` from rope_table). q: [n_tokens][q_dim], k: [n_tokens][kv_dim], in place.
void normalize_and_rotate_qk(const ModelSpec& spec, const LayerWeights& w,
                             std::span<const BatchEntry> batch, const float* cos_sin, float* q,
                             float* k);

// out[t] = softmax(q[t] . K^T / sqrt(head_dim)) V over positions 0..pos of t's sequence.
void attend(const ModelSpec& spec, const KvCache& kv, int32_t layer,
            std::span<const BatchEntry> batch, const float* q, float* out, CpuArena* arena);

}  // namespace tandem
