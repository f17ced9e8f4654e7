// The shape of an MoE model as the scheduler sees it: how many layers and experts, how many
// bytes one expert occupies and how much arithmetic one token costs. Plain numbers only, so the
// scheduler needs no model file: named shapes (`--shape qwen3-235b-a22b`) or a caller that read
// a GGUF's hyperparameters and tensor sizes fills `ShapeHparams`.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::sched {

class ShapeError : public std::invalid_argument {
 public:
  using std::invalid_argument::invalid_argument;
};

// Number formats the scheduler can cost: the byte and arithmetic class of a weight type.
enum class WeightClass { Float32, Half, Quantized };

struct ModelShape {
  std::string name;
  std::string weight_type;  // e.g. "q4_k": expert weights' type
  WeightClass weight_class = WeightClass::Quantized;
  int32_t n_layer = 0;
  int32_t n_dense_layers = 0;  // leading layers with a dense FFN instead of experts (deepseek)
  int32_t n_expert = 0;        // routed experts per MoE layer
  int32_t n_expert_used = 0;   // top-k
  int32_t n_embd = 0;
  int32_t n_ff_expert = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;
  int32_t n_vocab = 0;
  double expert_bytes = 0.0;     // one routed expert: gate + up + down
  double shared_bytes = 0.0;     // shared expert(s) of one MoE layer (0: none)
  double dense_ffn_bytes = 0.0;  // dense FFN of one leading dense layer
  double attn_bytes = 0.0;       // attention + norms + router of one layer
  double output_bytes = 0.0;     // token embeddings + output head

  int32_t n_moe_layers() const { return n_layer - n_dense_layers; }
  // Multiply-adds count as two operations.
  double expert_ops_per_token() const { return 6.0 * n_embd * static_cast<double>(n_ff_expert); }
  double shared_ops_per_token() const;
  double attn_ops_per_token() const;
  double total_expert_bytes() const { return expert_bytes * n_expert * n_moe_layers(); }
  // Every weight byte of the model.
  double total_bytes() const;
  // Throws ShapeError naming the first field that is missing or inconsistent.
  void validate() const;
};

// Bytes per weight of a ggml type name ("q4_k" -> 144 / 256); throws ShapeError when unknown.
double bytes_per_weight(const std::string& type);
WeightClass weight_class_of(const std::string& type);

// What a caller reads from a GGUF: hyperparameters plus the measured bytes of the tensors.
struct ShapeHparams {
  std::string name;
  std::string expert_type;  // type name of the expert tensors
  int32_t n_layer = 0;
  int32_t n_dense_layers = 0;
  int32_t n_expert = 0;
  int32_t n_expert_used = 0;
  int32_t n_embd = 0;
  int32_t n_ff_expert = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;
  int32_t n_vocab = 0;
  double expert_bytes = 0.0;  // bytes of one expert (all three tensors), from the file
  double shared_bytes = 0.0;  // per MoE layer
  double dense_ffn_bytes = 0.0;
  double attn_bytes = 0.0;  // per layer: every non-expert, non-FFN tensor of a block
  double output_bytes = 0.0;
};
ModelShape shape_from_hparams(const ShapeHparams& h);

// Built-in shapes with their published hyperparameters, weights in `type` (default q4_k).
ModelShape named_shape(const std::string& name, const std::string& type = "q4_k");
std::vector<std::string> named_shape_names();

}  // namespace tandem::sched
