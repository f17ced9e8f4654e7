#include "scheduler/model_shape.h"

#include <algorithm>
#include <cctype>
#include <cmath>

namespace tandem::sched {
namespace {

struct TypeBytes {
  const char* name;
  double block_bytes;
  double block_elems;
};

// ggml block geometry (bytes per block / weights per block), the same table as cpu/quant_types
// but kept here so the scheduler depends on nothing of ours.
constexpr TypeBytes kTypes[] = {
    {"f32", 4, 1},      {"f16", 2, 1},      {"bf16", 2, 1},     {"q4_0", 18, 32},
    {"q4_1", 20, 32},   {"q5_0", 22, 32},   {"q5_1", 24, 32},   {"q8_0", 34, 32},
    {"q2_k", 84, 256},  {"q3_k", 110, 256}, {"q4_k", 144, 256}, {"q5_k", 176, 256},
    {"q6_k", 210, 256}, {"q8_k", 292, 256}, {"mxfp4", 17, 32},
};

std::string lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Parameters of standard grouped-query attention: q and o are n_embd x (n_head * head_dim),
// k and v are n_embd x (n_head_kv * head_dim).
double gqa_params(int64_t n_embd, int64_t n_head, int64_t n_head_kv, int64_t head_dim) {
  return 2.0 * n_embd * n_head * head_dim + 2.0 * n_embd * n_head_kv * head_dim;
}

struct NamedSpec {
  const char* name;
  int32_t n_layer, n_dense_layers, n_expert, n_expert_used, n_embd, n_ff_expert;
  int32_t n_ff_shared, n_ff_dense, n_head, n_head_kv, head_dim, n_vocab;
  double attn_params;  // 0: standard GQA from the head counts
};

// Published configurations (Hugging Face config.json of each model).
// deepseek-v3 uses multi-head latent attention: its attention parameters are q_a 7168x1536,
// q_b 1536x(128*192), kv_a 7168x576, kv_b 512x(128*256), o (128*128)x7168; its KV cache holds
// a 576-wide latent per token, modelled as one KV head of width 288 (K and V).
constexpr NamedSpec kNamed[] = {
    {"qwen3-30b-a3b", 48, 0, 128, 8, 2048, 768, 0, 0, 32, 4, 128, 151936, 0},
    {"qwen3-235b-a22b", 94, 0, 128, 8, 4096, 1536, 0, 0, 64, 4, 128, 151936, 0},
    {"mixtral-8x7b", 32, 0, 8, 2, 4096, 14336, 0, 0, 32, 8, 128, 32000, 0},
    {"deepseek-v3", 61, 3, 256, 8, 7168, 2048, 2048, 18432, 128, 1, 288, 129280,
     7168.0 * 1536 + 1536.0 * 128 * 192 + 7168.0 * 576 + 512.0 * 128 * 256 + 128.0 * 128 * 7168},
};

}  // namespace

double bytes_per_weight(const std::string& type) {
  const std::string t = lower(type);
  for (const TypeBytes& tb : kTypes) {
    if (t == tb.name) return tb.block_bytes / tb.block_elems;
  }
  throw ShapeError("unknown weight type '" + type +
                   "' (known: f32 f16 bf16 q4_0 q4_1 q5_0 q5_1 q8_0 q2_k q3_k q4_k q5_k q6_k "
                   "q8_k mxfp4)");
}

WeightClass weight_class_of(const std::string& type) {
  const std::string t = lower(type);
  if (t == "f32") return WeightClass::Float32;
  if (t == "f16" || t == "bf16") return WeightClass::Half;
  bytes_per_weight(t);  // throws for unknown names
  return WeightClass::Quantized;
}

double ModelShape::shared_ops_per_token() const {
  const double bpw = expert_bytes / (3.0 * n_embd * static_cast<double>(n_ff_expert));
  return shared_bytes > 0.0 ? 2.0 * shared_bytes / bpw : 0.0;
}

double ModelShape::attn_ops_per_token() const {
  const double bpw = expert_bytes / (3.0 * n_embd * static_cast<double>(n_ff_expert));
  return 2.0 * attn_bytes / bpw;
}

double ModelShape::total_bytes() const {
  return total_expert_bytes() + shared_bytes * n_moe_layers() + dense_ffn_bytes * n_dense_layers +
         attn_bytes * n_layer + output_bytes;
}

void ModelShape::validate() const {
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) throw ShapeError("model shape '" + name + "': " + what);
  };
  need(n_layer > 0, "n_layer must be positive");
  need(n_dense_layers >= 0 && n_dense_layers < n_layer, "n_dense_layers must be in [0, n_layer)");
  need(n_expert > 0, "n_expert must be positive (not an MoE model?)");
  need(n_expert_used > 0 && n_expert_used <= n_expert, "n_expert_used must be in [1, n_expert]");
  need(n_embd > 0 && n_ff_expert > 0, "n_embd and n_ff_expert must be positive");
  need(n_head > 0 && n_head_kv > 0 && head_dim > 0, "attention head counts must be positive");
  need(expert_bytes > 0.0 && std::isfinite(expert_bytes), "expert_bytes must be positive");
  need(attn_bytes >= 0.0 && shared_bytes >= 0.0 && dense_ffn_bytes >= 0.0 && output_bytes >= 0.0,
       "byte counts must not be negative");
}

ModelShape shape_from_hparams(const ShapeHparams& h) {
  ModelShape s;
  s.name = h.name;
  s.weight_type = lower(h.expert_type);
  s.weight_class = weight_class_of(s.weight_type);
  s.n_layer = h.n_layer;
  s.n_dense_layers = h.n_dense_layers;
  s.n_expert = h.n_expert;
  s.n_expert_used = h.n_expert_used;
  s.n_embd = h.n_embd;
  s.n_ff_expert = h.n_ff_expert;
  s.n_head = h.n_head;
  s.n_head_kv = h.n_head_kv;
  s.head_dim = h.head_dim;
  s.n_vocab = h.n_vocab;
  s.expert_bytes = h.expert_bytes;
  s.shared_bytes = h.shared_bytes;
  s.dense_ffn_bytes = h.dense_ffn_bytes;
  s.attn_bytes = h.attn_bytes;
  s.output_bytes = h.output_bytes;
  s.validate();
  return s;
}

ModelShape named_shape(const std::string& name, const std::string& type) {
  const std::string n = lower(name);
  for (const NamedSpec& spec : kNamed) {
    if (n != spec.name) continue;
    const double bpw = bytes_per_weight(type);
    ModelShape s;
    s.name = spec.name;
    s.weight_type = lower(type);
    s.weight_class = weight_class_of(type);
    s.n_layer = spec.n_layer;
    s.n_dense_layers = spec.n_dense_layers;
    s.n_expert = spec.n_expert;
    s.n_expert_used = spec.n_expert_used;
    s.n_embd = spec.n_embd;
    s.n_ff_expert = spec.n_ff_expert;
    s.n_head = spec.n_head;
    s.n_head_kv = spec.n_head_kv;
    s.head_dim = spec.head_dim;
    s.n_vocab = spec.n_vocab;
    const double embd = spec.n_embd;
    s.expert_bytes = 3.0 * embd * spec.n_ff_expert * bpw;
    s.shared_bytes = 3.0 * embd * spec.n_ff_shared * bpw;
    s.dense_ffn_bytes = 3.0 * embd * spec.n_ff_dense * bpw;
    const double attn = spec.attn_params > 0.0
                            ? spec.attn_params
                            : gqa_params(spec.n_embd, spec.n_head, spec.n_head_kv, spec.head_dim);
    // Router weights stay f32 in GGUF files; norms are negligible.
    s.attn_bytes = attn * bpw + 4.0 * embd * spec.n_expert;
    s.output_bytes = 2.0 * embd * spec.n_vocab * bpw;
    s.validate();
    return s;
  }
  std::string known;
  for (const std::string& k : named_shape_names()) known += (known.empty() ? "" : ", ") + k;
  throw ShapeError("unknown model shape '" + name + "' (known: " + known + ")");
}

std::vector<std::string> named_shape_names() {
  std::vector<std::string> names;
  for (const NamedSpec& spec : kNamed) names.emplace_back(spec.name);
  return names;
}

}  // namespace tandem::sched
