// `tandem gen-model`: writes a random-weight GGUF of a real MoE architecture.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <string>

#include "server/cli_args.h"
#include "server/commands.h"
#include "tools/gen_model.h"

namespace tandem {
namespace {

constexpr const char* kHelp = R"(usage: tandem gen-model -o OUT.gguf [options]

Writes a model with random N(0, 0.02^2) weights (norms 1, router and 1-D tensors f32) whose
tensor names, shapes and metadata are those llama.cpp expects for the architecture. The same
seed gives the same bytes. Tensors are generated and written in row chunks: memory stays far
below the file size.

  -o, --output FILE     output path (written as FILE.tmp, then renamed)
  --arch NAME           qwen3moe (default), qwen2moe (shared expert), mixtral, olmoe
  --preset NAME         tiny (default: 3 layers, n_embd 256, 8 experts top-2, vocab 4096) or
                        bench (Qwen3-30B-A3B layers: 16 layers, n_embd 2048, 64 experts top-8,
                        expert ff 768, 32/4 heads of 128, vocab 151936; ~6 GB in q8_0)
  --type TYPE           f32, f16, bf16, q8_0 (default), q4_0, q4_k, q6_k, or q4_k_m: the
                        types llama.cpp's Q4_K_M quantization gives each tensor (q4_k; q6_k for
                        output and for attn_v and ffn_down in the first and last eighth of the
                        layers and every third between; 8-expert models: attn_k and attn_v
                        q8_0, attn_output q5_k)
  --seed N              random seed (default 1)
  --vocab FILE          vocabulary GGUF to copy the tokenizer.* metadata from (default: the
                        shipped llama-spm vocabulary, 32000 tokens, looked up in the source tree
                        the binary was built from: TANDEM_SOURCE_DIR/tools/vocab/; an installed
                        binary whose source tree is gone needs --vocab). A larger vocabulary is
                        cut to the model's first n tokens (special-token ids past the cut and
                        BPE merges of cut tokens dropped); a smaller one is padded with tokens
                        "[PAD<i>]" of type UNUSED (5) and score 0
  -t, --threads N       generator threads (default: all; the bytes do not depend on it)
  Shape overrides: --layers N --embd N --heads N --kv-heads N --head-dim N --experts N
                   --experts-used N --expert-ff N --shared-ff N (qwen2moe) --vocab-size N

Progress (percent, MB, MB/s) goes to stderr: live on a terminal, every 10% otherwise.
)";

GenModelOptions parse(const Args& args) {
  GenModelOptions o;
  ArgReader r(args);
  auto dim = [&](const std::string& a) { return static_cast<int32_t>(r.int_value(a, 1, 1 << 22)); };
  while (!r.done()) {
    const std::string a = r.next();
    if (a == "-o" || a == "--output")
      o.output_path = r.value(a);
    else if (a == "--arch")
      o.arch = r.value(a);
    else if (a == "--preset")
      o.preset = r.value(a);
    else if (a == "--type") {
      const std::string v = r.value(a);
      const auto t = parse_type_name(v);
      if (v == "q4_k_m") {
        o.mix = GenModelOptions::Mix::Q4_K_M;
      } else if (!t || !gen_model_supports_type(*t)) {
        throw UsageError("option --type: '" + v +
                         "' is not one of f32, f16, bf16, q8_0, q4_0, q4_k, q6_k, q4_k_m");
      } else {
        o.type = *t;
        o.mix = GenModelOptions::Mix::Uniform;
      }
    } else if (a == "--seed")
      o.seed = static_cast<uint64_t>(r.int_value(a, 0, INT64_MAX));
    else if (a == "--vocab")
      o.vocab_path = r.value(a);
    else if (a == "-t" || a == "--threads")
      o.n_threads = static_cast<int32_t>(r.int_value(a, 0, 4096));
    else if (a == "--layers")
      o.n_layer = dim(a);
    else if (a == "--embd")
      o.n_embd = dim(a);
    else if (a == "--heads")
      o.n_head = dim(a);
    else if (a == "--kv-heads")
      o.n_head_kv = dim(a);
    else if (a == "--head-dim")
      o.head_dim = dim(a);
    else if (a == "--experts")
      o.n_expert = dim(a);
    else if (a == "--experts-used")
      o.n_expert_used = dim(a);
    else if (a == "--expert-ff")
      o.n_ff_expert = dim(a);
    else if (a == "--shared-ff")
      o.n_ff_shared = dim(a);
    else if (a == "--vocab-size")
      o.n_vocab = dim(a);
    else
      throw UsageError("unknown option '" + a + "' (see tandem gen-model --help)");
  }
  if (o.output_path.empty()) throw UsageError("no output file given (-o OUT.gguf)");
  return o;
}

}  // namespace

int cmd_gen_model(const Args& args) {
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::printf("%s", kHelp);
      return 0;
    }
  }
  GenModelOptions o;
  try {
    o = parse(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tandem gen-model: %s\n", e.what());
    return 2;
  }
  const auto t0 = std::chrono::steady_clock::now();
  int last_percent = -1;
  // A terminal gets a live percentage; a log file a line every 10%.
  const bool tty = ::isatty(STDERR_FILENO) != 0;
  const int step = tty ? 1 : 10;
  generate_model(o, [&](uint64_t done, uint64_t total) {
    const int percent = (total ? static_cast<int>(100 * done / total) : 100) / step * step;
    if (percent == last_percent) return;
    last_percent = percent;
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    std::fprintf(stderr, "%sgen-model: %3d%%  %.0f / %.0f MB  %.0f MB/s%s", tty ? "\r" : "",
                 percent, done / 1e6, total / 1e6, s > 0 ? done / 1e6 / s : 0.0, tty ? " " : "\n");
  });
  std::fprintf(stderr, "%swrote %s\n", tty ? "\n" : "", o.output_path.c_str());
  return 0;
}

}  // namespace tandem
