// A loaded model: hyperparameters read from GGUF metadata and per-layer weights as views into
// the mapped file. One `expect_tensor` checks every tensor's name, type and shape on load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "engine/gguf.h"

namespace tandem {

class Tokenizer;

class ModelError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class RopeStyle { Normal, Neox };   // Normal: adjacent pairs; Neox: pairs (i, i + d/2)
enum class QkNorm { None, PerHead, Full };  // RMSNorm of q/k per head (qwen3) or over all heads (olmoe)

struct ModelSpec {
  std::string arch;
  int32_t n_layer = 0;
  int32_t n_embd = 0;
  int32_t n_head = 0;
  int32_t n_head_kv = 0;
  int32_t head_dim = 0;       // key_length == value_length
  int32_t n_vocab = 0;
  int32_t n_expert = 0;
  int32_t n_expert_used = 0;
  int32_t n_ff_expert = 0;
  int32_t n_ff_shared = 0;    // 0: no shared expert
  int32_t n_ctx_train = 0;
  int32_t n_rot = 0;          // rope dimensions (from the head start)
  float rms_eps = 1e-6f;
  float rope_freq_base = 10000.0f;
  float rope_freq_scale = 1.0f;
  RopeStyle rope_style = RopeStyle::Neox;
  QkNorm qk_norm = QkNorm::None;
  bool qkv_bias = false;
  bool norm_topk = false;     // renormalise the selected experts' weights to sum 1
  bool tied_output = false;   // output head reuses token_embd

  int32_t q_dim() const { return n_head * head_dim; }
  int32_t kv_dim() const { return n_head_kv * head_dim; }
};

struct LayerWeights {
  TensorView attn_norm;                 // [n_embd]
  TensorView wq, wk, wv, wo;            // [n_embd, q_dim], [n_embd, kv_dim] x2, [q_dim, n_embd]
  TensorView bq, bk, bv;                // biases (qkv_bias only)
  TensorView q_norm, k_norm;            // [head_dim] (PerHead) or [q_dim]/[kv_dim] (Full)
  TensorView ffn_norm;                  // [n_embd]
  TensorView router;                    // [n_embd, n_expert], F32
  TensorView gate_exps, up_exps;        // [n_embd, n_ff_expert, n_expert]
  TensorView down_exps;                 // [n_ff_expert, n_embd, n_expert]
  TensorView router_shexp;              // [n_embd] -> one logit (sigmoid gate of the shared expert)
  TensorView gate_shexp, up_shexp;      // [n_embd, n_ff_shared]
  TensorView down_shexp;                // [n_ff_shared, n_embd]
};

// How weight matrices are laid out in memory once loaded.
//  File: as in the file (tests compare against it).
//  Cpu:  matrices the CPU kernels stream faster in another layout are rearranged in place
//        (cpu/interleave.h: Q4_K and Q8_0 rows interleaved 16 at a time), one copy, same size.
//        Only a file read into memory is rearranged; a mapped file stays as it is. Accelerators
//        still receive the file's rows: Accelerator::upload_matrix rebuilds them.
enum class WeightLayout { File, Cpu };

class Model {
 public:
  // Opens, validates and reads (or maps, see GgufMemory) the file; builds the tokenizer. Throws
  // GgufError / ModelError naming the file and what is wrong (unknown architecture, missing
  // tensor, bad shape...).
  static std::unique_ptr<Model> load(const std::string& path, GgufMemory memory = GgufMemory::Read,
                                     WeightLayout layout = WeightLayout::File);
  ~Model();

  const ModelSpec& spec() const { return spec_; }
  const GgufFile& file() const { return *file_; }
  const Tokenizer& tokenizer() const { return *tokenizer_; }
  const TensorView& token_embd() const { return token_embd_; }
  const TensorView& output_norm() const { return output_norm_; }
  const TensorView& output() const { return output_; }
  const std::vector<LayerWeights>& layers() const { return layers_; }
  // Bytes of weights one decoded token reads: dense weights + n_expert_used experts per layer.
  uint64_t bytes_per_token() const;
  // Weight matrices rearranged for the CPU at load (WeightLayout::Cpu), 0 otherwise.
  int32_t n_interleaved() const { return n_interleaved_; }

 private:
  Model() = default;
  std::unique_ptr<GgufFile> file_;
  std::unique_ptr<Tokenizer> tokenizer_;
  ModelSpec spec_;
  TensorView token_embd_, output_norm_, output_;
  std::vector<LayerWeights> layers_;
  int32_t n_interleaved_ = 0;

  void interleave_for_cpu(GgufFile& file);
};

// Architectures the engine implements ("qwen3moe", "qwen2moe", "llama" with experts, "olmoe").
bool is_supported_architecture(const std::string& arch);

}  // namespace tandem
