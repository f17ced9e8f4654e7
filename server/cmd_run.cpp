// `tandem run`: generate text from a prompt, or process given token ids and dump logits in
// the layout of the reference files (for parity checks against any implementation).
#include <chrono>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/engine.h"
#include "engine/logit_case.h"
#include "engine/model.h"
#include "engine/sampler.h"
#include "engine/tokenizer.h"
#include "server/accelerator_options.h"
#include "server/cli_args.h"
#include "server/commands.h"

namespace tandem {
namespace {

constexpr const char* kHelp =
    R"(usage: tandem run -m MODEL (-p PROMPT | --prompt-tokens IDS) [options]

Generates text, streaming it to stdout, then prints prompt and generation tokens/s to stderr.

  -m, --model FILE        GGUF model
  -p, --prompt TEXT       prompt text (tokenized with the model's tokenizer, BOS as it says)
  -n, --n-predict N       tokens to generate (default 64)
  --temp T                temperature, 0 = greedy (default 0.8)
  --top-k K, --top-p P, --min-p P, --repeat-penalty R, --presence-penalty P, --frequency-penalty P
  --seed S                sampling seed (default 0)
  -t, --threads N         CPU threads (default: all physical cores; at most the CPUs this
                          process may use)
  -c, --ctx-size N        context length (default 4096)
  --kv-type f32|f16       KV cache element type (default f32)
  --mmap                  map the GGUF file instead of reading it into (huge-page) memory:
                          faster start, slower decode (Q4_K, Q8_0 also stay in the file's layout)
%s
Parity checking:
  --prompt-tokens 12,7,99 process these ids as one batch (repeat the option for more cases)
  --force-tokens 5,9,...  feed exactly these tokens one at a time after the prompt (teacher
                          forcing; one list per --prompt-tokens, in order)
  --dump-logits OUT.json  write {"model", "cases":[{"prompt", "prompt_logits", "greedy",
                          "decode_logits"}]}; greedy = the tokens fed (argmax unless forced)
)";

struct RunOptions {
  std::string model_path, prompt, dump_path;
  bool have_prompt = false;
  GgufMemory weights = GgufMemory::Read;
  int32_t n_predict = 64;
  SamplingParams sampling;
  EngineOptions engine;
  std::vector<std::vector<int32_t>> prompt_tokens, force_tokens;
  AcceleratorSetup accel;
};

RunOptions parse(const Args& args) {
  RunOptions o;
  ArgReader r(args);
  while (!r.done()) {
    const std::string a = r.next();
    if (a == "-m" || a == "--model") o.model_path = r.value(a);
    else if (a == "--mmap") o.weights = GgufMemory::Map;
    else if (a == "-p" || a == "--prompt") { o.prompt = r.value(a); o.have_prompt = true; }
    else if (a == "-n" || a == "--n-predict") o.n_predict = static_cast<int32_t>(r.int_value(a, 0, 1 << 20));
    else if (a == "--temp") o.sampling.temperature = static_cast<float>(r.float_value(a, 0, 100));
    else if (a == "--top-k") o.sampling.top_k = static_cast<int32_t>(r.int_value(a, 0, 1 << 24));
    else if (a == "--top-p") o.sampling.top_p = static_cast<float>(r.float_value(a, 0, 1));
    else if (a == "--min-p") o.sampling.min_p = static_cast<float>(r.float_value(a, 0, 1));
    else if (a == "--repeat-penalty") o.sampling.repeat_penalty = static_cast<float>(r.float_value(a, 0, 100));
    else if (a == "--presence-penalty") o.sampling.presence_penalty = static_cast<float>(r.float_value(a, -100, 100));
    else if (a == "--frequency-penalty") o.sampling.frequency_penalty = static_cast<float>(r.float_value(a, -100, 100));
    else if (a == "--seed") o.sampling.seed = static_cast<uint64_t>(r.int_value(a, 0, INT64_MAX));
    else if (a == "-t" || a == "--threads") o.engine.n_threads = static_cast<int32_t>(r.int_value(a, 0, 4096));
    else if (a == "-c" || a == "--ctx-size") o.engine.n_ctx = static_cast<int32_t>(r.int_value(a, 1, 1 << 22));
    else if (a == "--kv-type") {
      const std::string v = r.value(a);
      if (v != "f32" && v != "f16") throw UsageError("option --kv-type: '" + v + "' is not f32 or f16");
      o.engine.kv_type = v == "f16" ? KvType::F16 : KvType::F32;
    }
    else if (a == "--prompt-tokens") o.prompt_tokens.push_back(parse_int_list(a, r.value(a)));
    else if (a == "--force-tokens") o.force_tokens.push_back(parse_int_list(a, r.value(a)));
    else if (a == "--dump-logits") o.dump_path = r.value(a);
    else if (o.accel.parse_option(a, r)) continue;
    else throw UsageError("unknown option '" + a + "' (see tandem run --help)");
  }
  if (o.model_path.empty()) throw UsageError("no model given (-m FILE)");
  if (o.have_prompt == !o.prompt_tokens.empty()) {
    throw UsageError("give exactly one of -p PROMPT or --prompt-tokens IDS");
  }
  if (o.force_tokens.size() > o.prompt_tokens.size()) {
    throw UsageError("more --force-tokens lists than --prompt-tokens lists");
  }
  if (!o.dump_path.empty() && o.prompt_tokens.empty()) {
    throw UsageError("--dump-logits needs --prompt-tokens");
  }
  return o;
}

using Clock = std::chrono::steady_clock;
double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

std::vector<BatchEntry> prompt_batch(const std::vector<int32_t>& tokens, bool all_logits) {
  std::vector<BatchEntry> batch;
  for (size_t i = 0; i < tokens.size(); ++i) {
    batch.push_back({tokens[i], static_cast<int32_t>(i), 0, all_logits || i + 1 == tokens.size()});
  }
  return batch;
}

int dump_logits(const RunOptions& o, Engine& engine) {
  nlohmann::json out;
  const std::string& p = o.model_path;
  out["model"] = p.substr(p.find_last_of('/') == std::string::npos ? 0 : p.find_last_of('/') + 1);
  out["cases"] = nlohmann::json::array();
  for (size_t i = 0; i < o.prompt_tokens.size(); ++i) {
    const std::vector<int32_t>* forced = i < o.force_tokens.size() ? &o.force_tokens[i] : nullptr;
    out["cases"].push_back(to_json(run_logit_case(engine, 0, o.prompt_tokens[i], forced, o.n_predict)));
  }
  std::ofstream f(o.dump_path);
  if (!f) throw std::runtime_error("cannot write " + o.dump_path);
  f << out.dump() << "\n";
  std::fprintf(stderr, "wrote %zu case(s) to %s\n", o.prompt_tokens.size(), o.dump_path.c_str());
  return 0;
}

int generate(const RunOptions& o, const Model& model, Engine& engine) {
  const Tokenizer& tok = model.tokenizer();
  const std::vector<int32_t> prompt = o.have_prompt ? tok.encode(o.prompt, true, true) : o.prompt_tokens[0];
  if (prompt.empty()) throw UsageError("the prompt tokenizes to no tokens");
  if (static_cast<int64_t>(prompt.size()) + o.n_predict > engine.options().n_ctx) {
    throw UsageError("prompt (" + std::to_string(prompt.size()) + " tokens) + -n " +
                     std::to_string(o.n_predict) + " exceeds the context of " +
                     std::to_string(engine.options().n_ctx) + " (use -c)");
  }
  Sampler sampler(o.sampling);
  std::vector<int32_t> history = prompt;
  std::vector<float> logits;
  const auto t0 = Clock::now();
  engine.forward(prompt_batch(prompt, false), logits);
  const double t_prompt = seconds_since(t0);
  TextStreamer streamer(tok);
  if (o.have_prompt) std::fputs(o.prompt.c_str(), stdout);
  const auto t1 = Clock::now();
  int32_t n_gen = 0;
  while (n_gen < o.n_predict) {
    const int32_t token = sampler.sample(logits, history);
    if (tok.is_end_of_generation(token)) break;
    history.push_back(token);
    ++n_gen;
    std::fputs(streamer.push(token).c_str(), stdout);
    std::fflush(stdout);
    if (n_gen == o.n_predict) break;
    const BatchEntry e{token, static_cast<int32_t>(history.size()) - 1, 0, true};
    engine.forward(std::span(&e, 1), logits);
  }
  std::fputs(streamer.flush().c_str(), stdout);
  std::fputs("\n", stdout);
  const double t_gen = seconds_since(t1);
  std::fprintf(stderr, "prompt: %zu tokens in %.3f s (%.2f tokens/s)\n", prompt.size(), t_prompt,
               prompt.size() / t_prompt);
  std::fprintf(stderr, "generation: %d tokens in %.3f s (%.2f tokens/s)\n", n_gen, t_gen,
               t_gen > 0 ? n_gen / t_gen : 0.0);
  return 0;
}

}  // namespace

int cmd_run(const Args& args) {
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::printf(kHelp, AcceleratorSetup::kHelp);
      return 0;
    }
  }
  RunOptions o;
  try {
    o = parse(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tandem run: %s\n", e.what());
    return 2;
  }
  const auto model = Model::load(o.model_path, o.weights, WeightLayout::Cpu);
  o.accel.apply(o.engine, *model);
  int rc = 0;
  {
    Engine engine(*model, o.engine);
    rc = o.dump_path.empty() ? generate(o, *model, engine) : dump_logits(o, engine);
  }
  o.accel.finish();
  return rc;
}

}  // namespace tandem
