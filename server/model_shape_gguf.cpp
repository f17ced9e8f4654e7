#include "server/model_shape_gguf.h"

#include <map>
#include <string_view>

#include "engine/gguf.h"

namespace tandem {
namespace {

// Layer index of "blk.N.<rest>", or -1; `rest` receives the part after the index.
int layer_of(const std::string& name, std::string* rest) {
  if (name.rfind("blk.", 0) != 0) return -1;
  const size_t dot = name.find('.', 4);
  if (dot == std::string::npos) return -1;
  *rest = name.substr(dot + 1);
  return std::stoi(name.substr(4, dot - 4));
}

bool contains(const std::string& s, std::string_view part) {
  return s.find(part) != std::string::npos;
}

struct LayerBytes {
  double experts = 0, shared = 0, dense_ffn = 0, other = 0;
};

}  // namespace

sched::ModelShape shape_from_gguf(const std::string& path) {
  const std::unique_ptr<GgufFile> f = GgufFile::open(path);
  const std::string arch = f->architecture();
  const std::string p = arch + ".";
  sched::ShapeHparams h;
  h.name = f->get_string("general.name", arch);
  h.n_layer = static_cast<int32_t>(f->get_int(p + "block_count"));
  h.n_expert = static_cast<int32_t>(f->get_int(p + "expert_count", 0));
  h.n_expert_used = static_cast<int32_t>(f->get_int(p + "expert_used_count", 0));
  h.n_embd = static_cast<int32_t>(f->get_int(p + "embedding_length"));
  h.n_head = static_cast<int32_t>(f->get_int(p + "attention.head_count"));
  h.n_head_kv = static_cast<int32_t>(f->get_int(p + "attention.head_count_kv", h.n_head));
  h.head_dim = static_cast<int32_t>(
      f->get_int(p + "attention.key_length", h.n_head > 0 ? h.n_embd / h.n_head : 0));
  h.n_ff_expert = static_cast<int32_t>(
      f->get_int(p + "expert_feed_forward_length", f->get_int(p + "feed_forward_length", 0)));
  h.n_dense_layers = static_cast<int32_t>(f->get_int(p + "leading_dense_block_count", 0));
  std::map<int, LayerBytes> layers;
  for (const TensorView& t : f->tensors()) {
    std::string rest;
    const int il = layer_of(t.name, &rest);
    const double bytes = static_cast<double>(t.n_bytes);
    if (il < 0) {
      h.output_bytes += bytes;
      if (t.name == "token_embd.weight") h.n_vocab = static_cast<int32_t>(t.ne[1]);
      continue;
    }
    LayerBytes& lb = layers[il];
    if (contains(rest, "_exps.")) {
      lb.experts += bytes;
      if (h.expert_type.empty()) h.expert_type = std::string(type_name(t.type));
    } else if (contains(rest, "_shexp")) {
      lb.shared += bytes;
    } else if (rest.rfind("ffn_gate.", 0) == 0 || rest.rfind("ffn_up.", 0) == 0 ||
               rest.rfind("ffn_down.", 0) == 0) {
      lb.dense_ffn += bytes;
    } else {
      lb.other += bytes;
    }
  }
  for (const auto& [il, lb] : layers) {
    if (lb.experts > 0 && h.expert_bytes == 0 && h.n_expert > 0) {
      h.expert_bytes = lb.experts / h.n_expert;
      h.shared_bytes = lb.shared;
      h.attn_bytes = lb.other;
    }
    if (lb.dense_ffn > 0 && h.dense_ffn_bytes == 0) h.dense_ffn_bytes = lb.dense_ffn;
  }
  if (h.expert_type.empty()) {
    throw sched::ShapeError(path + ": no expert tensors (blk.N.ffn_*_exps): not an MoE model");
  }
  return sched::shape_from_hparams(h);
}

}  // namespace tandem
