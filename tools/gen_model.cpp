#include "tools/gen_model.h"


#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <stdexcept>
#include <unordered_set>
#include <vector>

#include "cpu/arena.h"
#include "cpu/quant.h"
#include "engine/gguf.h"
#include "engine/gguf_writer.h"

namespace tandem {
namespace {

constexpr float kWeightStd = 0.02f;
constexpr int64_t kRowsPerChunk =
    16;  // unit of deterministic generation (thread-count independent)

struct Shape {
  int32_t n_layer, n_embd, n_head, n_head_kv, head_dim, n_expert, n_expert_used, n_ff_expert,
      n_ff_shared, n_vocab;
  int32_t n_ctx;
  float rope_base, rms_eps;
};

// What a tensor holds: random weights, ones (norm weights) or small random biases.
enum class Fill { Random, Ones };

struct TensorPlan {
  std::string name;
  GgmlType type;
  std::vector<int64_t> ne;
  Fill fill;
};

Shape preset_shape(const GenModelOptions& o) {
  Shape s{};
  if (o.preset == "tiny") {  // the reference models' shape
    s = {3, 256, 4, 2, 64, 8, 2, 256, 512, 4096, 4096, 1e6f, 1e-6f};
  } else if (o.preset == "bench") {  // Qwen3-30B-A3B layers, 16 of them
    s = {16, 2048, 32, 4, 128, 64, 8, 768, 2048, 151936, 40960, 1e6f, 1e-6f};
  } else {
    throw std::invalid_argument("unknown preset '" + o.preset + "' (tiny, bench)");
  }
  if (o.arch == "olmoe") {
    s.n_head_kv = s.n_head;
    s.rope_base = 1e4f;
    s.rms_eps = 1e-5f;
  } else if (o.arch == "mixtral") {
    s.rms_eps = 1e-5f;
  }
  if (o.arch != "qwen2moe") s.n_ff_shared = 0;
  auto over = [](int32_t& field, int32_t value) {
    if (value > 0) field = value;
  };
  over(s.n_layer, o.n_layer);
  over(s.n_embd, o.n_embd);
  over(s.n_head, o.n_head);
  over(s.n_head_kv, o.n_head_kv);
  over(s.head_dim, o.head_dim);
  over(s.n_expert, o.n_expert);
  over(s.n_expert_used, o.n_expert_used);
  over(s.n_ff_expert, o.n_ff_expert);
  if (o.arch == "qwen2moe") over(s.n_ff_shared, o.n_ff_shared);
  over(s.n_vocab, o.n_vocab);
  if (s.n_expert_used > s.n_expert) throw std::invalid_argument("--experts-used exceeds --experts");
  if (s.n_head % s.n_head_kv != 0)
    throw std::invalid_argument("--heads must be a multiple of --kv-heads");
  return s;
}

// llama.cpp's use_more_bits: the first and last eighth of the layers and every third between.
bool more_bits_layer(int32_t il, int32_t n_layer) {
  return il < n_layer / 8 || il >= 7 * n_layer / 8 || (il - n_layer / 8) % 3 == 2;
}

// The type llama.cpp's quantizer (llama-quant.cpp, ftype MOSTLY_Q4_K_M) gives each weight of
// the tensors gen-model writes; `role` is the name without "blk.N." and ".weight".
GgmlType q4_k_m_type(const std::string& role, int32_t il, const Shape& s) {
  const bool eight_experts = s.n_expert == 8;
  if (role == "output") return GgmlType::Q6_K;
  if (role == "attn_v") {
    if (eight_experts) return GgmlType::Q8_0;
    return more_bits_layer(il, s.n_layer) ? GgmlType::Q6_K : GgmlType::Q4_K;
  }
  if (role == "attn_k" && eight_experts) return GgmlType::Q8_0;
  if (role == "attn_output" && eight_experts) return GgmlType::Q5_K;
  if (role.starts_with("ffn_down") && more_bits_layer(il, s.n_layer)) return GgmlType::Q6_K;
  return GgmlType::Q4_K;
}

std::vector<TensorPlan> plan_tensors(const GenModelOptions& o, const Shape& s) {
  const std::string& arch = o.arch;
  const int64_t e = s.n_embd, q = int64_t{s.n_head} * s.head_dim,
                kv = int64_t{s.n_head_kv} * s.head_dim;
  const GgmlType f32 = GgmlType::F32;
  std::vector<TensorPlan> p;
  // A quantizable weight: "blk.<il>.<role>.weight" (il -1: "<role>.weight"), in its type.
  const auto weight = [&](const std::string& role, int32_t il, std::vector<int64_t> ne) {
    const GgmlType type = o.mix == GenModelOptions::Mix::Q4_K_M ? q4_k_m_type(role, il, s) : o.type;
    const std::string block = il >= 0 ? "blk." + std::to_string(il) + "." : "";
    p.push_back({block + role + ".weight", type, std::move(ne), Fill::Random});
  };
  weight("token_embd", -1, {e, s.n_vocab});
  for (int32_t il = 0; il < s.n_layer; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    p.push_back({b + "attn_norm.weight", f32, {e}, Fill::Ones});
    weight("attn_q", il, {e, q});
    weight("attn_k", il, {e, kv});
    weight("attn_v", il, {e, kv});
    if (arch == "qwen2moe") {
      p.push_back({b + "attn_q.bias", f32, {q}, Fill::Random});
      p.push_back({b + "attn_k.bias", f32, {kv}, Fill::Random});
      p.push_back({b + "attn_v.bias", f32, {kv}, Fill::Random});
    }
    weight("attn_output", il, {q, e});
    if (arch == "qwen3moe") {  // RMSNorm per head
      p.push_back({b + "attn_q_norm.weight", f32, {s.head_dim}, Fill::Ones});
      p.push_back({b + "attn_k_norm.weight", f32, {s.head_dim}, Fill::Ones});
    } else if (arch == "olmoe") {  // RMSNorm over all heads at once
      p.push_back({b + "attn_q_norm.weight", f32, {q}, Fill::Ones});
      p.push_back({b + "attn_k_norm.weight", f32, {kv}, Fill::Ones});
    }
    p.push_back({b + "ffn_norm.weight", f32, {e}, Fill::Ones});
    p.push_back({b + "ffn_gate_inp.weight", f32, {e, s.n_expert}, Fill::Random});
    weight("ffn_gate_exps", il, {e, s.n_ff_expert, s.n_expert});
    weight("ffn_up_exps", il, {e, s.n_ff_expert, s.n_expert});
    weight("ffn_down_exps", il, {s.n_ff_expert, e, s.n_expert});
    if (arch == "qwen2moe") {
      p.push_back({b + "ffn_gate_inp_shexp.weight", f32, {e}, Fill::Random});
      weight("ffn_gate_shexp", il, {e, s.n_ff_shared});
      weight("ffn_up_shexp", il, {e, s.n_ff_shared});
      weight("ffn_down_shexp", il, {s.n_ff_shared, e});
    }
  }
  p.push_back({"output_norm.weight", f32, {e}, Fill::Ones});
  weight("output", -1, {e, s.n_vocab});
  return p;
}

// How general.name and the CLI call the model's weights.
std::string weights_name(const GenModelOptions& o) {
  return o.mix == GenModelOptions::Mix::Q4_K_M ? "q4_k_m" : std::string(type_name(o.type));
}

// llama.cpp's general.file_type for the model's weights (LLAMA_FTYPE_MOSTLY_*).
uint32_t file_type(const GenModelOptions& o) {
  if (o.mix == GenModelOptions::Mix::Q4_K_M) return 15;
  switch (o.type) {
    case GgmlType::F32:
      return 0;
    case GgmlType::F16:
      return 1;
    case GgmlType::Q4_0:
      return 2;
    case GgmlType::Q8_0:
      return 7;
    case GgmlType::Q4_K:
      return 15;  // llama.cpp has no all-Q4_K file type
    case GgmlType::Q6_K:
      return 18;
    case GgmlType::BF16:
      return 32;
    default:
      return 0;
  }
}

// general.* and the architecture's hyperparameters, keys and order as llama.cpp's converter.
void add_hparams(GgufWriter& w, const GenModelOptions& o, const Shape& s) {
  const std::string& arch = o.arch;
  const std::string p = (arch == "mixtral" ? std::string("llama") : arch) + ".";
  w.add_string("general.architecture", arch == "mixtral" ? "llama" : arch);
  w.add_string("general.name", "tandem-synthetic-" + arch + "-" + o.preset + "-" + weights_name(o));
  w.add_u32("general.file_type", file_type(o));
  w.add_u32("general.quantization_version", 2);
  w.add_u32(p + "context_length", s.n_ctx);
  w.add_u32(p + "embedding_length", s.n_embd);
  w.add_u32(p + "block_count", s.n_layer);
  const bool separate_expert_ff = arch == "qwen3moe" || arch == "qwen2moe";
  w.add_u32(p + "feed_forward_length", separate_expert_ff ? 2 * s.n_ff_expert : s.n_ff_expert);
  if (separate_expert_ff) w.add_u32(p + "expert_feed_forward_length", s.n_ff_expert);
  if (arch == "qwen2moe") w.add_u32(p + "expert_shared_feed_forward_length", s.n_ff_shared);
  w.add_u32(p + "attention.head_count", s.n_head);
  w.add_u32(p + "attention.head_count_kv", s.n_head_kv);
  w.add_u32(p + "attention.key_length", s.head_dim);
  w.add_u32(p + "attention.value_length", s.head_dim);
  w.add_u32(p + "rope.dimension_count", s.head_dim);
  w.add_f32(p + "rope.freq_base", s.rope_base);
  w.add_f32(p + "attention.layer_norm_rms_epsilon", s.rms_eps);
  w.add_u32(p + "expert_count", s.n_expert);
  w.add_u32(p + "expert_used_count", s.n_expert_used);
  w.add_u32(p + "vocab_size", s.n_vocab);
}

// Copies tokenizer.* from the vocabulary file, cut or padded to n_vocab tokens.
void add_tokenizer(GgufWriter& w, const GgufFile& vocab, int32_t n_vocab) {
  const size_t n_src = vocab.get_string_array("tokenizer.ggml.tokens").size();
  const size_t n = static_cast<size_t>(n_vocab);
  std::unordered_set<std::string> kept;
  for (const std::string& key : vocab.metadata_keys()) {
    if (key.rfind("tokenizer.", 0) != 0) continue;
    GgufValue v = *vocab.find(key);
    if (key == "tokenizer.ggml.tokens") {
      v.array_strings.resize(std::min(n, n_src));
      for (size_t i = n_src; i < n; ++i)
        v.array_strings.push_back("[PAD" + std::to_string(i) + "]");
      kept.insert(v.array_strings.begin(), v.array_strings.end());
    } else if (key == "tokenizer.ggml.scores") {
      v.array_floats.resize(n, 0.0);
    } else if (key == "tokenizer.ggml.token_type") {
      v.array_ints.resize(std::min(n, n_src));
      v.array_ints.resize(n, 5);  // padding tokens are UNUSED
    } else if (v.is_integer() && key.size() > 9 &&
               key.compare(key.size() - 9, 9, "_token_id") == 0 && v.int_value >= n_vocab) {
      continue;  // a special token cut off with the vocabulary
    }
    if (v.is_array())
      v.array_size = std::max({v.array_strings.size(), v.array_floats.size(), v.array_ints.size()});
    if (key == "tokenizer.ggml.merges" && n < n_src) {
      std::vector<std::string> merges;
      for (const std::string& m : v.array_strings) {
        const size_t sp = m.find(' ', 1);
        if (sp != std::string::npos && kept.count(m.substr(0, sp)) &&
            kept.count(m.substr(sp + 1)) && kept.count(m.substr(0, sp) + m.substr(sp + 1))) {
          merges.push_back(m);
        }
      }
      v.array_strings = std::move(merges);
      v.array_size = v.array_strings.size();
    }
    w.add(key, v);
  }
}

// splitmix64: a counter-based generator, so any chunk's numbers can be made on any thread.
constexpr uint64_t kGolden = 0x9e3779b97f4a7c15ull;
uint64_t mix(uint64_t x) {
  x += kGolden;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Rows [row0, row0 + n_rows) of a tensor as floats, then in its type.
void make_chunk(const TensorPlan& t, uint64_t tensor_seed, int64_t chunk, int64_t n_rows,
                std::vector<float>& values, uint8_t* out) {
  const int64_t row = t.ne[0];
  values.resize(static_cast<size_t>(n_rows * row));
  if (t.fill == Fill::Ones) {
    std::fill(values.begin(), values.end(), 1.0f);
  } else {
    // The SplitMix64 stream keyed by (tensor, chunk); Marsaglia's polar method turns pairs of
    // uniforms into pairs of normals without trigonometry (1.7x Box-Muller's speed here).
    const uint64_t key = mix(tensor_seed ^ mix(static_cast<uint64_t>(chunk)));
    uint64_t counter = 0;
    auto uniform = [&] {  // in (-1, 1), 53 random bits
      return static_cast<double>(mix(key + kGolden * counter++) >> 11) *
                 (2.0 / 9007199254740992.0) -
             1.0;
    };
    for (size_t i = 0; i < values.size(); i += 2) {
      double u = 0, v = 0, s = 0;
      do {
        u = uniform();
        v = uniform();
        s = u * u + v * v;
      } while (s >= 1.0 || s == 0.0);
      const double m = std::sqrt(-2.0 * std::log(s) / s) * kWeightStd;
      values[i] = static_cast<float>(u * m);
      if (i + 1 < values.size()) values[i + 1] = static_cast<float>(v * m);
    }
  }
  const int64_t stride = row_bytes(t.type, row);
  for (int64_t r = 0; r < n_rows; ++r)
    quantize_row(t.type, values.data() + r * row, out + r * stride, row);
}

}  // namespace

bool gen_model_supports_type(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_K:
    case GgmlType::Q6_K:
      return true;
    default:
      return false;
  }
}

std::string default_vocab_path() {
  // Compiled in from the source tree, so a build run from anywhere finds it; an install that
  // moves the binary elsewhere passes --vocab.
  return std::string(TANDEM_SOURCE_DIR) + "/tools/vocab/ggml-vocab-llama-spm.gguf";
}

namespace {

std::unique_ptr<GgufFile> open_vocab(const GenModelOptions& o) {
  if (o.vocab_path.empty() && !std::filesystem::exists(default_vocab_path())) {
    throw std::runtime_error(
        "the shipped vocabulary " + default_vocab_path() +
        " is missing (it is looked up in the source tree Tandem was built from); "
        "pass --vocab FILE");
  }
  auto vocab = GgufFile::open(o.vocab_path.empty() ? default_vocab_path() : o.vocab_path);
  const GgufValue* tokens = vocab->find("tokenizer.ggml.tokens");
  if (!tokens || !tokens->is_array() || tokens->array_type != GgufValueType::STRING ||
      tokens->array_size == 0) {
    throw std::invalid_argument(vocab->path() +
                                ": no tokenizer.ggml.tokens string array: not a vocabulary GGUF");
  }
  return vocab;
}

// Generates and writes every tensor's data in plan order. Chunks of kRowsPerChunk rows are
// made in parallel batches and written in order: memory stays at one batch.
void write_tensors(GgufWriter& w, const std::vector<TensorPlan>& plan, const GenModelOptions& o,
                   uint64_t total, const std::function<void(uint64_t, uint64_t)>& progress) {
  CpuArena arena(o.n_threads > 0 ? o.n_threads : 0);
  const int64_t batch_chunks = 64;
  std::vector<uint8_t> buffer;
  uint64_t done = 0;
  for (size_t ti = 0; ti < plan.size(); ++ti) {
    const TensorPlan& t = plan[ti];
    int64_t n_rows = 1;
    for (size_t d = 1; d < t.ne.size(); ++d) n_rows *= t.ne[d];
    const int64_t stride = row_bytes(t.type, t.ne[0]);
    const int64_t n_chunks = (n_rows + kRowsPerChunk - 1) / kRowsPerChunk;
    const uint64_t tensor_seed = mix(o.seed * 0x100000001b3ull + ti);
    for (int64_t c0 = 0; c0 < n_chunks; c0 += batch_chunks) {
      const int64_t c1 = std::min(n_chunks, c0 + batch_chunks);
      const int64_t rows = std::min(n_rows, c1 * kRowsPerChunk) - c0 * kRowsPerChunk;
      buffer.resize(static_cast<size_t>(rows * stride));
      arena.parallel_for(c0, c1, 1, [&](int64_t lo, int64_t hi) {
        thread_local std::vector<float> values;
        for (int64_t c = lo; c < hi; ++c) {
          const int64_t r0 = c * kRowsPerChunk;
          make_chunk(t, tensor_seed, c, std::min(kRowsPerChunk, n_rows - r0), values,
                     buffer.data() + (r0 - c0 * kRowsPerChunk) * stride);
        }
      });
      w.write_data(buffer.data(), buffer.size());
      done += buffer.size();
      if (progress) progress(done, total);
    }
  }
}

}  // namespace

void generate_model(const GenModelOptions& o,
                    const std::function<void(uint64_t, uint64_t)>& progress) {
  if (o.arch != "qwen3moe" && o.arch != "qwen2moe" && o.arch != "mixtral" && o.arch != "olmoe") {
    throw std::invalid_argument("unknown architecture '" + o.arch +
                                "' (qwen3moe, qwen2moe, mixtral, olmoe)");
  }
  if (o.mix == GenModelOptions::Mix::Uniform && !gen_model_supports_type(o.type)) {
    throw std::invalid_argument("gen-model cannot write type " + std::string(type_name(o.type)) +
                                " (f32, f16, bf16, q8_0, q4_0, q4_k, q6_k)");
  }
  if (o.output_path.empty()) throw std::invalid_argument("no output path given");
  const Shape s = preset_shape(o);
  const auto vocab = open_vocab(o);
  const std::vector<TensorPlan> plan = plan_tensors(o, s);

  GgufWriter w;
  add_hparams(w, o, s);
  add_tokenizer(w, *vocab, s.n_vocab);
  uint64_t total = 0;
  for (const TensorPlan& t : plan) total += w.tensor_bytes(w.add_tensor(t.name, t.type, t.ne));

  // A failure leaves no half-written OUT: the writer removes OUT.tmp unless finished.
  const std::string tmp = o.output_path + ".tmp";
  w.begin(tmp);
  write_tensors(w, plan, o, total, progress);
  w.finish();
  std::error_code ec;
  std::filesystem::rename(tmp, o.output_path, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    throw std::runtime_error("cannot rename " + tmp + " to " + o.output_path + ": " + ec.message());
  }
}

}  // namespace tandem
