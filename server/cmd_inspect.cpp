// `tandem inspect FILE`: what a GGUF file holds, and how its bytes split by tensor kind.
#include <cinttypes>
#include <cstdio>
#include <map>
#include <string>

#include "engine/gguf.h"
#include "engine/tensor_kind.h"
#include "server/commands.h"

namespace tandem {
namespace {

constexpr const char* kHelp =
    "usage: tandem inspect FILE.gguf [--metadata]\n"
    "  Prints the architecture, hyperparameters, every tensor with type and shape, and the\n"
    "  bytes per tensor kind (attention, experts, shared experts, embeddings, ...).\n"
    "  --metadata  print every metadata key (arrays summarised)\n";

void print_hparams(const GgufFile& f, const std::string& arch) {
  static const char* kKeys[] = {
      "block_count",          "context_length",          "embedding_length",
      "feed_forward_length",  "expert_feed_forward_length", "expert_shared_feed_forward_length",
      "attention.head_count", "attention.head_count_kv", "attention.key_length",
      "attention.value_length", "attention.layer_norm_rms_epsilon", "rope.freq_base",
      "rope.scaling.factor",  "expert_count",            "expert_used_count",
      "expert_weights_norm",  "vocab_size"};
  for (const char* k : kKeys) {
    if (const GgufValue* v = f.find(arch + "." + k)) std::printf("  %-36s %s\n", k, v->to_string().c_str());
  }
}

}  // namespace

int cmd_inspect(const Args& args) {
  std::string path;
  bool all_metadata = false;
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::printf("%s", kHelp);
      return 0;
    }
    if (a == "--metadata") {
      all_metadata = true;
    } else if (!a.empty() && a[0] == '-') {
      std::fprintf(stderr, "tandem inspect: unknown option '%s'\n%s", a.c_str(), kHelp);
      return 2;
    } else if (path.empty()) {
      path = a;
    } else {
      std::fprintf(stderr, "tandem inspect: more than one file given\n");
      return 2;
    }
  }
  if (path.empty()) {
    std::fprintf(stderr, "tandem inspect: no file given\n%s", kHelp);
    return 2;
  }
  std::unique_ptr<GgufFile> f;
  try {
    f = GgufFile::open(path);
  } catch (const GgufError& e) {
    std::fprintf(stderr, "tandem inspect: %s\n", e.what());
    return 1;
  }
  const std::string arch = f->get_string("general.architecture", "(none)");
  std::printf("file:          %s\n", path.c_str());
  std::printf("gguf version:  %u, %" PRIu64 " bytes, alignment %" PRIu64 "\n", f->version(),
              f->file_size(), f->alignment());
  std::printf("architecture:  %s\n", arch.c_str());
  std::printf("name:          %s\n", f->get_string("general.name", "").c_str());
  std::printf("hyperparameters:\n");
  print_hparams(*f, arch);
  if (f->has("tokenizer.ggml.model")) {
    std::printf("tokenizer:     %s (pre: %s), %zu tokens\n",
                f->get_string("tokenizer.ggml.model").c_str(),
                f->get_string("tokenizer.ggml.pre", "default").c_str(),
                f->has("tokenizer.ggml.tokens") ? f->get_string_array("tokenizer.ggml.tokens").size()
                                                : size_t{0});
  }
  if (all_metadata) {
    std::printf("metadata (%zu keys):\n", f->metadata_keys().size());
    for (const std::string& k : f->metadata_keys()) {
      std::printf("  %-48s %s\n", k.c_str(), f->find(k)->to_string().c_str());
    }
  }
  std::printf("tensors (%zu):\n", f->tensors().size());
  std::map<TensorKind, uint64_t> bytes_by_kind;
  for (const TensorView& t : f->tensors()) {
    std::printf("  %-36s %-6s %-22s %12" PRIu64 " bytes\n", t.name.c_str(),
                std::string(type_name(t.type)).c_str(), t.shape_string().c_str(), t.n_bytes);
    bytes_by_kind[classify_tensor(t.name)] += t.n_bytes;
  }
  std::printf("bytes by kind:\n");
  uint64_t total = 0;
  for (const auto& [kind, bytes] : bytes_by_kind) {
    std::printf("  %-16s %14" PRIu64 " bytes (%.1f MiB)\n", tensor_kind_name(kind).data(), bytes,
                bytes / 1048576.0);
    total += bytes;
  }
  std::printf("  %-16s %14" PRIu64 " bytes (%.1f MiB)\n", "total", total, total / 1048576.0);
  return 0;
}

}  // namespace tandem
