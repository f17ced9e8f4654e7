// Synthetic models: random-weight GGUF files of real MoE architectures, with tensor names,
// shapes and metadata exactly as llama.cpp expects, for demos, tests and benchmarks.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "cpu/quant_types.h"

namespace tandem {

struct GenModelOptions {
  std::string arch = "qwen3moe";   // qwen3moe, qwen2moe, mixtral, olmoe
  std::string preset = "tiny";     // tiny, bench
  GgmlType type = GgmlType::Q8_0;  // weight type of the 2-D/3-D tensors (router and norms stay f32)
  // Q4_K_M: llama.cpp's Q4_K_M choice per tensor instead of one type (`type` is then ignored):
  // the files users download mix Q4_K with Q6_K (output, attn_v and ffn_down of some layers)
  // and, in 8-expert models, Q8_0 (attn_k, attn_v) and Q5_K (attn_output).
  enum class Mix { Uniform, Q4_K_M } mix = Mix::Uniform;
  uint64_t seed = 1;
  std::string vocab_path;  // vocabulary GGUF whose tokenizer metadata is copied
  std::string output_path;
  int32_t n_threads = 0;  // 0: hardware threads
  // Overrides of the preset (0: keep the preset's value).
  int32_t n_layer = 0, n_embd = 0, n_head = 0, n_head_kv = 0, head_dim = 0;
  int32_t n_expert = 0, n_expert_used = 0, n_ff_expert = 0, n_ff_shared = 0, n_vocab = 0;
};

// The weight types gen-model can write.
bool gen_model_supports_type(GgmlType type);

// The vocabulary shipped with Tandem (default of vocab_path).
std::string default_vocab_path();

// Writes the model to output_path (through output_path + ".tmp", renamed at the end).
// progress(bytes_done, bytes_total) is called now and then. Throws std::runtime_error or
// std::invalid_argument naming what is wrong (unknown arch, a shape the type cannot hold...).
void generate_model(const GenModelOptions& options,
                    const std::function<void(uint64_t, uint64_t)>& progress = {});

}  // namespace tandem
