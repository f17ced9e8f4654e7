#include "engine/model.h"

#include <array>
#include <atomic>
#include <initializer_list>
#include <sstream>

#include "cpu/interleave.h"
#include "engine/tokenizer.h"
#include "engine/worker_threads.h"

namespace tandem {
namespace {

struct ArchTraits {
  const char* name;
  RopeStyle rope;
  QkNorm qk_norm;
  bool qkv_bias;
  bool shared_expert;
  bool norm_topk;
};

// What each architecture's graph does, as llama.cpp builds it.
constexpr std::array<ArchTraits, 4> kArchs = {{
    {"qwen3moe", RopeStyle::Neox, QkNorm::PerHead, false, false, true},
    {"qwen2moe", RopeStyle::Neox, QkNorm::None, true, true, false},
    {"llama", RopeStyle::Normal, QkNorm::None, false, false, true},  // Mixtral
    {"olmoe", RopeStyle::Neox, QkNorm::Full, false, false, false},
}};

const ArchTraits* find_arch(const std::string& arch) {
  for (const ArchTraits& a : kArchs) {
    if (arch == a.name) return &a;
  }
  return nullptr;
}

std::string shape_of(std::initializer_list<int64_t> dims) {
  std::string s = "[";
  bool first = true;
  for (int64_t d : dims) {
    s += (first ? "" : ", ") + std::to_string(d);
    first = false;
  }
  return s + "]";
}

class TensorBinder {
 public:
  explicit TensorBinder(const GgufFile& f) : file_(f) {}

  // The tensor `name` with exactly the given dimensions; F32-only when float_only.
  TensorView expect(const std::string& name, std::initializer_list<int64_t> dims,
                    bool float_only = false) const {
    const TensorView* t = file_.find_tensor(name);
    if (!t) throw ModelError(file_.path() + ": missing tensor '" + name + "'");
    bool ok = t->n_dims == static_cast<int>(dims.size());
    int i = 0;
    for (int64_t d : dims) ok = ok && t->ne[i++] == d;
    if (!ok) {
      throw ModelError(file_.path() + ": tensor '" + name + "' has shape " + t->shape_string() +
                       ", expected " + shape_of(dims));
    }
    if (!traits(t->type).supported) {
      throw ModelError(file_.path() + ": tensor '" + name + "' has type " +
                       std::string(type_name(t->type)) + ", which Tandem cannot compute with");
    }
    if (float_only && t->type != GgmlType::F32) {
      throw ModelError(file_.path() + ": tensor '" + name + "' has type " +
                       std::string(type_name(t->type)) + ", expected f32");
    }
    return *t;
  }

  bool has(const std::string& name) const { return file_.find_tensor(name) != nullptr; }

 private:
  const GgufFile& file_;
};

int32_t positive_int(const GgufFile& f, const std::string& key) {
  const int64_t v = f.get_int(key);
  if (v <= 0 || v > (int64_t{1} << 30)) {
    throw ModelError(f.path() + ": metadata '" + key + "' = " + std::to_string(v) +
                     " is out of range");
  }
  return static_cast<int32_t>(v);
}

ModelSpec read_spec(const GgufFile& f, const ArchTraits& a) {
  const std::string p = std::string(a.name) + ".";
  ModelSpec s;
  s.arch = a.name;
  s.n_layer = positive_int(f, p + "block_count");
  s.n_embd = positive_int(f, p + "embedding_length");
  s.n_head = positive_int(f, p + "attention.head_count");
  s.n_head_kv = f.has(p + "attention.head_count_kv") ? positive_int(f, p + "attention.head_count_kv")
                                                     : s.n_head;
  s.head_dim = f.has(p + "attention.key_length") ? positive_int(f, p + "attention.key_length")
                                                 : s.n_embd / s.n_head;
  if (f.has(p + "attention.value_length") && positive_int(f, p + "attention.value_length") != s.head_dim) {
    throw ModelError(f.path() + ": key_length != value_length is not supported");
  }
  if (s.n_head % s.n_head_kv != 0) {
    throw ModelError(f.path() + ": head_count " + std::to_string(s.n_head) +
                     " is not a multiple of head_count_kv " + std::to_string(s.n_head_kv));
  }
  if (!f.has(p + "expert_count")) {
    throw ModelError(f.path() + ": architecture '" + s.arch +
                     "' without experts (no '" + p + "expert_count'): Tandem serves MoE models only");
  }
  s.n_expert = positive_int(f, p + "expert_count");
  s.n_expert_used = positive_int(f, p + "expert_used_count");
  if (s.n_expert_used > s.n_expert) {
    throw ModelError(f.path() + ": expert_used_count exceeds expert_count");
  }
  s.n_ff_expert = f.has(p + "expert_feed_forward_length")
                      ? positive_int(f, p + "expert_feed_forward_length")
                      : positive_int(f, p + "feed_forward_length");
  s.n_ff_shared = a.shared_expert ? positive_int(f, p + "expert_shared_feed_forward_length") : 0;
  s.n_ctx_train = static_cast<int32_t>(f.get_int(p + "context_length", 4096));
  s.n_rot = static_cast<int32_t>(f.get_int(p + "rope.dimension_count", s.head_dim));
  if (s.n_rot <= 0 || s.n_rot > s.head_dim || s.n_rot % 2) {
    throw ModelError(f.path() + ": rope.dimension_count " + std::to_string(s.n_rot) + " is invalid");
  }
  s.rms_eps = static_cast<float>(f.get_float(p + "attention.layer_norm_rms_epsilon", 1e-6));
  s.rope_freq_base = static_cast<float>(f.get_float(p + "rope.freq_base", 10000.0));
  const double scale = f.get_float(p + "rope.scaling.factor", 0.0);
  s.rope_freq_scale = scale > 0 ? static_cast<float>(1.0 / scale) : 1.0f;
  s.rope_style = a.rope;
  s.qk_norm = a.qk_norm;
  s.qkv_bias = a.qkv_bias;
  s.norm_topk = f.get_bool(p + "expert_weights_norm", a.norm_topk);
  return s;
}

LayerWeights bind_layer(const TensorBinder& b, const ModelSpec& s, int il) {
  const std::string p = "blk." + std::to_string(il) + ".";
  const int64_t e = s.n_embd, q = s.q_dim(), kv = s.kv_dim();
  LayerWeights w;
  w.attn_norm = b.expect(p + "attn_norm.weight", {e}, true);
  w.wq = b.expect(p + "attn_q.weight", {e, q});
  w.wk = b.expect(p + "attn_k.weight", {e, kv});
  w.wv = b.expect(p + "attn_v.weight", {e, kv});
  w.wo = b.expect(p + "attn_output.weight", {q, e});
  if (s.qkv_bias) {
    w.bq = b.expect(p + "attn_q.bias", {q}, true);
    w.bk = b.expect(p + "attn_k.bias", {kv}, true);
    w.bv = b.expect(p + "attn_v.bias", {kv}, true);
  }
  if (s.qk_norm == QkNorm::PerHead) {
    w.q_norm = b.expect(p + "attn_q_norm.weight", {s.head_dim}, true);
    w.k_norm = b.expect(p + "attn_k_norm.weight", {s.head_dim}, true);
  } else if (s.qk_norm == QkNorm::Full) {
    w.q_norm = b.expect(p + "attn_q_norm.weight", {q}, true);
    w.k_norm = b.expect(p + "attn_k_norm.weight", {kv}, true);
  }
  w.ffn_norm = b.expect(p + "ffn_norm.weight", {e}, true);
  w.router = b.expect(p + "ffn_gate_inp.weight", {e, s.n_expert}, true);
  w.gate_exps = b.expect(p + "ffn_gate_exps.weight", {e, s.n_ff_expert, s.n_expert});
  w.up_exps = b.expect(p + "ffn_up_exps.weight", {e, s.n_ff_expert, s.n_expert});
  w.down_exps = b.expect(p + "ffn_down_exps.weight", {s.n_ff_expert, e, s.n_expert});
  if (s.n_ff_shared > 0) {
    w.router_shexp = b.expect(p + "ffn_gate_inp_shexp.weight", {e}, true);
    w.gate_shexp = b.expect(p + "ffn_gate_shexp.weight", {e, s.n_ff_shared});
    w.up_shexp = b.expect(p + "ffn_up_shexp.weight", {e, s.n_ff_shared});
    w.down_shexp = b.expect(p + "ffn_down_shexp.weight", {s.n_ff_shared, e});
  }
  return w;
}

}  // namespace

bool is_supported_architecture(const std::string& arch) { return find_arch(arch) != nullptr; }

Model::~Model() = default;

std::unique_ptr<Model> Model::load(const std::string& path, GgufMemory memory,
                                   WeightLayout layout) {
  std::unique_ptr<Model> m(new Model());
  m->file_ = GgufFile::open(path, memory, layout == WeightLayout::Cpu);
  const GgufFile& f = *m->file_;
  const std::string arch = f.get_string("general.architecture");
  const ArchTraits* a = find_arch(arch);
  if (!a) {
    std::ostringstream msg;
    msg << path << ": unsupported architecture '" << arch << "' (supported:";
    for (const ArchTraits& t : kArchs) msg << ' ' << t.name;
    msg << ")";
    throw ModelError(msg.str());
  }
  m->spec_ = read_spec(f, *a);
  ModelSpec& s = m->spec_;
  const TensorView* embd = f.find_tensor("token_embd.weight");
  if (!embd) throw ModelError(path + ": missing tensor 'token_embd.weight'");
  s.n_vocab = static_cast<int32_t>(embd->ne[1]);
  TensorBinder b(f);
  m->token_embd_ = b.expect("token_embd.weight", {s.n_embd, s.n_vocab});
  m->output_norm_ = b.expect("output_norm.weight", {s.n_embd}, true);
  s.tied_output = !b.has("output.weight");
  m->output_ = s.tied_output ? m->token_embd_ : b.expect("output.weight", {s.n_embd, s.n_vocab});
  for (int il = 0; il < s.n_layer; ++il) m->layers_.push_back(bind_layer(b, s, il));
  m->tokenizer_ = Tokenizer::from_gguf(f);
  if (m->tokenizer_->n_vocab() > s.n_vocab) {
    throw ModelError(path + ": tokenizer has " + std::to_string(m->tokenizer_->n_vocab()) +
                     " tokens but token_embd has " + std::to_string(s.n_vocab) + " rows");
  }
  if (layout == WeightLayout::Cpu && m->file_->memory() == GgufMemory::Read) {
    m->interleave_for_cpu(*m->file_);
  }
  m->file_->seal();
  return m;
}

void Model::interleave_for_cpu(GgufFile& file) {
  // Matrices only ever multiplied (token_embd is read by rows, so it and a tied output stay).
  std::vector<TensorView*> matrices;
  auto consider = [&](TensorView& t) {
    if (t.data == nullptr || t.data == token_embd_.data) return;
    if (worth_interleaving(t.type, t.ne[1], t.ne[0])) matrices.push_back(&t);
  };
  consider(output_);
  for (LayerWeights& w : layers_) {
    for (TensorView* t : {&w.wq, &w.wk, &w.wv, &w.wo, &w.gate_exps, &w.up_exps, &w.down_exps,
                          &w.gate_shexp, &w.up_shexp, &w.down_shexp}) {
      consider(*t);
    }
  }
  std::atomic<size_t> next{0};
  auto work = [&] {
    for (size_t i = next++; i < matrices.size(); i = next++) {
      TensorView& t = *matrices[i];
      interleave_rows(t.type, file.writable_data(t), t.ne[1] * t.ne[2] * t.ne[3], t.ne[0]);
    }
  };
  run_on_worker_threads(matrices.size(), work);
  for (TensorView* t : matrices) t->type = *interleaved_type(t->type);
  n_interleaved_ = static_cast<int32_t>(matrices.size());
}

uint64_t Model::bytes_per_token() const {
  uint64_t bytes = output_.n_bytes + static_cast<uint64_t>(token_embd_.row_stride());
  for (const LayerWeights& w : layers_) {
    bytes += w.wq.n_bytes + w.wk.n_bytes + w.wv.n_bytes + w.wo.n_bytes + w.router.n_bytes;
    bytes += (w.gate_exps.n_bytes + w.up_exps.n_bytes + w.down_exps.n_bytes) /
             spec_.n_expert * spec_.n_expert_used;
    bytes += w.gate_shexp.n_bytes + w.up_shexp.n_bytes + w.down_shexp.n_bytes;
  }
  return bytes;
}

}  // namespace tandem
