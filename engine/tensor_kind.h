// What part of the model a tensor belongs to, judged from its llama.cpp name.
#pragma once

#include <string_view>

namespace tandem {

enum class TensorKind { Embeddings, Attention, Router, Experts, SharedExperts, DenseFfn, Norms, Output, Other };

TensorKind classify_tensor(std::string_view name);
std::string_view tensor_kind_name(TensorKind kind);

}  // namespace tandem
