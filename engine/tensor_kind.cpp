#include "engine/tensor_kind.h"

namespace tandem {

TensorKind classify_tensor(std::string_view name) {
  auto has = [&](std::string_view s) { return name.find(s) != std::string_view::npos; };
  if (name == "token_embd.weight") return TensorKind::Embeddings;
  if (name == "output.weight") return TensorKind::Output;
  if (has("_norm")) return TensorKind::Norms;
  if (has("_shexp")) return TensorKind::SharedExperts;  // before the router: ffn_gate_inp_shexp
  if (has("ffn_gate_inp")) return TensorKind::Router;
  if (has("_exps")) return TensorKind::Experts;
  if (has("attn_")) return TensorKind::Attention;
  if (has("ffn_")) return TensorKind::DenseFfn;
  return TensorKind::Other;
}

std::string_view tensor_kind_name(TensorKind kind) {
  switch (kind) {
    case TensorKind::Embeddings: return "embeddings";
    case TensorKind::Attention: return "attention";
    case TensorKind::Router: return "router";
    case TensorKind::Experts: return "experts";
    case TensorKind::SharedExperts: return "shared experts";
    case TensorKind::DenseFfn: return "dense ffn";
    case TensorKind::Norms: return "norms";
    case TensorKind::Output: return "output";
    case TensorKind::Other: return "other";
  }
  return "other";
}

}  // namespace tandem
