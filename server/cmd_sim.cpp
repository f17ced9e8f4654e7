// `tandem sim`: replays routing (recorded or synthetic) through each scheduling policy on the
// modelled clock of a hardware profile and prints predicted prefill and decode tokens/s.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/deferral.h"
#include "scheduler/replay.h"
#include "server/cli_args.h"
#include "server/commands.h"
#include "server/model_shape_gguf.h"

namespace tandem {
namespace {

constexpr const char* kHelp =
    "usage: tandem sim --hardware H.json (-m MODEL.gguf | --shape NAME) [options]\n"
    "  Replays MoE routing through the CPU/GPU scheduling policies on the modelled clock of a\n"
    "  hardware profile (configs/hardware/*.json) and prints predicted tokens/s per policy.\n"
    "  --hardware FILE        hardware profile (required)\n"
    "  -m, --model FILE       read the model's shape from a GGUF file (no weights loaded)\n"
    "  --shape NAME           qwen3-30b-a3b | qwen3-235b-a22b | mixtral-8x7b | deepseek-v3\n"
    "  --type T               expert weight type for --shape (default q4_k)\n"
    "  --expert-vram-gb G     VRAM for routed experts, GB (default: GPU memory - 4)\n"
    "  --routing FILE         recorded routing (JSON lines, docs/scheduler.md); default: a\n"
    "                         synthetic trace (Zipf popularity + temporal reuse)\n"
    "  --policy P             all | cpu-experts | static | fiddler | hybrimoe | tandem (default "
    "all)\n"
    "  -o table|json          output format (default table)\n"
    "  --trace-out FILE       write the timeline (prefill + first decode steps) as Chrome/Perfetto "
    "JSON\n"
    "  --prompt-tokens N      synthetic prompt length (default 512)\n"
    "  --decode-tokens N      synthetic decode steps (default 64)\n"
    "  --zipf S               synthetic popularity skew (default 0.9)\n"
    "  --reuse R              synthetic per-sequence reuse probability (default 0.3)\n"
    "  --seed N               synthetic trace and prefetch-predictor seed (default 1)\n"
    "  --prefetch-accuracy P  next-layer prediction accuracy (default: the trace's, else 0.85)\n"
    "  --prefetch-errors M    what a wrong prediction names: routing (drawn like the layer's\n"
    "                         routing so far: popular and recent experts; default) | uniform\n"
    "  --pin-layers L,L,...   MoE layers whose experts stay resident (tandem)\n"
    "  --eviction E           tandem cache: next-use | score | lru | lfu (default next-use;\n"
    "                         hybrimoe always uses score)\n"
    "  --defer-experts D      tandem: each token's D lowest-weight experts may finish while the\n"
    "                         next layer's attention runs (expert deferral; default 0 = off)\n"
    "  --save-routing FILE    write the routing that was replayed (JSON lines)\n"
    "  --cost-model FILE      cost model to replay with (e.g. from tandem calibrate -o) instead\n"
    "                         of the one derived from the hardware profile\n";

struct SimArgs {
  std::string hardware, model, shape, type = "q4_k", routing, policy = "all", format = "table";
  std::string trace_out, save_routing, cost_model;
  double expert_vram_gb = -1;
  sched::SyntheticTraceConfig synth;
  sched::ReplayOptions replay;
};

// Runs a named-value parser; its std::invalid_argument becomes a usage error naming the option.
template <typename Parse>
auto named_value(const std::string& opt, const std::string& value, Parse parse) {
  try {
    return parse(value);
  } catch (const std::invalid_argument& e) {
    throw UsageError(opt + ": " + e.what());
  }
}

SimArgs parse_args(const Args& args, bool* help) {
  SimArgs a;
  ArgReader r(args);
  while (!r.done()) {
    const std::string opt = r.next();
    if (opt == "-h" || opt == "--help") {
      *help = true;
      return a;
    }
    if (opt == "--hardware")
      a.hardware = r.value(opt);
    else if (opt == "-m" || opt == "--model")
      a.model = r.value(opt);
    else if (opt == "--shape")
      a.shape = r.value(opt);
    else if (opt == "--type")
      a.type = r.value(opt);
    else if (opt == "--expert-vram-gb")
      a.expert_vram_gb = r.float_value(opt, 0, 1e6);
    else if (opt == "--routing")
      a.routing = r.value(opt);
    else if (opt == "--policy")
      a.policy = r.value(opt);
    else if (opt == "-o")
      a.format = r.value(opt);
    else if (opt == "--trace-out")
      a.trace_out = r.value(opt);
    else if (opt == "--save-routing")
      a.save_routing = r.value(opt);
    else if (opt == "--cost-model")
      a.cost_model = r.value(opt);
    else if (opt == "--prompt-tokens")
      a.synth.n_prompt = static_cast<int32_t>(r.int_value(opt, 1, 65536));
    else if (opt == "--decode-tokens")
      a.synth.n_decode = static_cast<int32_t>(r.int_value(opt, 0, 65536));
    else if (opt == "--zipf")
      a.synth.zipf_s = r.float_value(opt, 0, 10);
    else if (opt == "--reuse")
      a.synth.reuse = r.float_value(opt, 0, 1);
    else if (opt == "--seed")
      a.synth.seed = a.replay.seed = static_cast<uint64_t>(r.int_value(opt, 0, INT64_MAX));
    else if (opt == "--prefetch-accuracy")
      a.replay.prefetch_accuracy = r.float_value(opt, 0, 1);
    else if (opt == "--pin-layers")
      a.replay.pin_layers = parse_int_list(opt, r.value(opt));
    else if (opt == "--prefetch-errors")
      a.replay.prefetch_errors = named_value(opt, r.value(opt), sched::parse_prediction_errors);
    else if (opt == "--eviction")
      a.replay.tandem_eviction = named_value(opt, r.value(opt), sched::parse_eviction);
    else if (opt == "--defer-experts")
      a.replay.defer_experts = static_cast<int32_t>(r.int_value(opt, 0, 1024));
    else
      throw UsageError("unknown option '" + opt + "' (see tandem sim --help)");
  }
  if (a.hardware.empty()) throw UsageError("--hardware FILE is required");
  if (a.model.empty() == a.shape.empty())
    throw UsageError("give exactly one of -m MODEL or --shape NAME");
  if (a.format != "table" && a.format != "json")
    throw UsageError("-o must be table or json, got '" + a.format + "'");
  return a;
}

sched::CostModel load_cost_model(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error("cannot read cost model '" + path + "'");
  try {
    return sched::CostModel::from_json(nlohmann::json::parse(in));
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error("cost model '" + path + "' is not valid JSON: " + e.what());
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error("cost model '" + path + "': " + e.what());
  }
}

sched::RoutingTrace routing_for(const SimArgs& a, const sched::ModelShape& shape) {
  if (!a.routing.empty()) return sched::load_trace(a.routing);
  sched::SyntheticTraceConfig c = a.synth;
  c.n_layer = shape.n_moe_layers();
  c.n_expert = shape.n_expert;
  c.n_expert_used = shape.n_expert_used;
  return sched::make_synthetic_trace(c);
}

void print_table(const std::vector<sched::ReplayResult>& results, const sched::ModelShape& shape,
                 const sched::HardwareSpec& hw, const sched::ReplayOptions& replay) {
  std::printf("model %s (%s, %.1f GB of experts), hardware %s, %.1f GB of VRAM for experts\n",
              shape.name.c_str(), shape.weight_type.c_str(), shape.total_expert_bytes() / 1e9,
              hw.name.c_str(), replay.expert_vram_gb);
  if (!results.empty()) {
    std::printf("prefetch predictor: %.0f%% of true experts named, wrong guesses %s\n",
                100.0 * results.front().prefetch_accuracy,
                replay.prefetch_errors == sched::PredictionErrors::Uniform
                    ? "uniform over unused experts"
                    : "drawn like the layer's routing so far");
  }
  std::printf("%-12s %12s %13s %9s %10s %13s %15s\n", "policy", "decode tok/s", "prefill tok/s",
              "hit rate", "slots", "GB copied/tok", "planner us/layer");
  for (const sched::ReplayResult& r : results) {
    const double per_tok = r.decode.n_tokens ? r.decode.bytes_copied / 1e9 / r.decode.n_tokens : 0;
    std::printf("%-12s %12.2f %13.1f %8.1f%% %10lld %13.3f %15.2f\n", r.policy.c_str(),
                r.decode.tokens_per_s, r.prefill.tokens_per_s, 100.0 * r.decode.hit_rate(),
                static_cast<long long>(r.expert_slots), per_tok, r.planner_us_per_layer);
  }
  const auto find = [&](const std::string& n) -> const sched::ReplayResult* {
    for (const auto& r : results)
      if (r.policy == n) return &r;
    return nullptr;
  };
  const sched::ReplayResult* t = find("tandem");
  const sched::ReplayResult* c = find("cpu-experts");
  if (!t) return;
  if (c && c->decode.tokens_per_s > 0) {
    std::printf("tandem / cpu-experts: decode %.3fx, prefill %.3fx\n",
                t->decode.tokens_per_s / c->decode.tokens_per_s,
                t->prefill.tokens_per_s / c->prefill.tokens_per_s);
  }
  double best_d = 0, best_p = 0;
  std::string name_d, name_p;
  for (const char* n : {"static", "fiddler", "hybrimoe"}) {
    const sched::ReplayResult* b = find(n);
    if (b && b->decode.tokens_per_s > best_d) best_d = b->decode.tokens_per_s, name_d = n;
    if (b && b->prefill.tokens_per_s > best_p) best_p = b->prefill.tokens_per_s, name_p = n;
  }
  if (best_d > 0) {
    std::printf(
        "tandem / best of static, fiddler, hybrimoe: decode %.3fx (%s), prefill %.3fx (%s)\n",
        t->decode.tokens_per_s / best_d, name_d.c_str(), t->prefill.tokens_per_s / best_p,
        name_p.c_str());
  }
}

}  // namespace

int cmd_sim(const Args& args) {
  bool help = false;
  SimArgs a = parse_args(args, &help);
  if (help) {
    std::printf("%s", kHelp);
    return 0;
  }
  const sched::HardwareSpec hw = sched::load_hardware_spec(a.hardware);
  const sched::ModelShape shape =
      a.model.empty() ? sched::named_shape(a.shape, a.type) : shape_from_gguf(a.model);
  sched::check_defer_experts(a.replay.defer_experts, shape.n_expert_used, "--defer-experts");
  const sched::CostModel cost = a.cost_model.empty() ? sched::CostModel::from_hardware(hw, shape)
                                                     : load_cost_model(a.cost_model);
  const double vram = a.expert_vram_gb >= 0 ? a.expert_vram_gb
                                            : (hw.has_gpu ? std::max(0.0, hw.gpu.vram_gb - 4) : 0);
  if (hw.has_gpu && vram > hw.gpu.vram_gb) {
    throw UsageError("--expert-vram-gb " + std::to_string(vram) + " exceeds the " +
                     std::to_string(hw.gpu.vram_gb) + " GB of " + hw.gpu.name);
  }
  a.replay.expert_vram_gb = vram;
  const sched::RoutingTrace trace = routing_for(a, shape);
  if (!a.save_routing.empty()) sched::save_trace(trace, a.save_routing);
  std::vector<std::string> policies =
      a.policy == "all" ? sched::policy_names() : std::vector<std::string>{a.policy};
  if (!hw.has_gpu && a.policy == "all") policies = {"cpu-experts"};
  sched::ChromeTrace timeline;
  std::vector<sched::ReplayResult> results;
  for (const std::string& p : policies) {
    results.push_back(
        sched::replay(shape, cost, trace, p, a.replay, a.trace_out.empty() ? nullptr : &timeline));
  }
  if (!a.trace_out.empty()) {
    std::ofstream out(a.trace_out);
    out << timeline.to_json().dump() << '\n';
    if (!out) throw std::runtime_error("cannot write trace '" + a.trace_out + "'");
  }
  if (a.format == "json") {
    nlohmann::json j = {
        {"hardware", hw.name},
        {"model", shape.name},
        {"type", shape.weight_type},
        {"expert_vram_gb", vram},
        {"prefetch_errors", sched::prediction_errors_name(a.replay.prefetch_errors)},
        {"policies", nlohmann::json::array()}};
    for (const auto& r : results) j["policies"].push_back(r.to_json());
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_table(results, shape, hw, a.replay);
  }
  return 0;
}

}  // namespace tandem
