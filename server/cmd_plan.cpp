// `tandem plan -c CONFIG`: before loading anything heavy, what the config puts in VRAM, the
// predicted prefill and decode speed, and where the time goes. Reads only the model, gpu and
// scheduler sections (tolerantly: other keys are ignored); docs/scheduler.md describes them.
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
    "usage: tandem plan -c CONFIG.json [-m MODEL.gguf | --shape NAME [--type T]] [-o table|json]\n"
    "  Predicts, from the config's model, gpu and scheduler sections and a hardware profile,\n"
    "  what lives in VRAM, prefill (512-token prompt) and decode tokens/s and where the time "
    "goes.\n"
    "  Refuses a memory budget larger than the profile's GPU, or a model the host cannot hold.\n"
    "  -c FILE        config (sections: model, gpu, scheduler)\n"
    "  -m FILE        model, overriding model.path\n"
    "  --shape NAME   a named model shape instead of a file (see tandem sim --help)\n"
    "  --type T       weight type of --shape (default q4_k)\n"
    "  -o table|json  output format\n";

constexpr const char* kDefaultProfile = "configs/hardware/rtx4090-ddr5-desktop.json";
// VRAM kept for the KV cache, activations and the CUDA context (assumption).
constexpr double kWorkspaceGb = 1.5;

struct PlanConfig {
  std::string model, device = "none", profile, policy = "auto";
  double budget_gb = 0.0;
  std::vector<int32_t> pin_layers;
  int32_t defer_experts = 0;
};

PlanConfig read_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw UsageError("config '" + path + "' cannot be opened");
  nlohmann::json j;
  try {
    j = nlohmann::json::parse(in);
  } catch (const nlohmann::json::parse_error& e) {
    throw UsageError(path + ": not valid JSON: " + e.what());
  }
  if (!j.is_object()) throw UsageError(path + ": a config must be a JSON object");
  PlanConfig c;
  auto str = [&](const nlohmann::json& o, const char* key, const std::string& where,
                 std::string& out) {
    if (!o.contains(key) || o[key].is_null()) return;
    if (o[key].is_string())
      out = o[key].get<std::string>();
    else if (o[key].is_number_integer())
      out = std::to_string(o[key].get<int64_t>());
    else
      throw UsageError(path + ": " + where + "." + key + " must be a string");
  };
  if (j.contains("model") && j["model"].is_string()) c.model = j["model"].get<std::string>();
  if (j.contains("model") && j["model"].is_object()) str(j["model"], "path", "model", c.model);
  if (j.contains("gpu") && j["gpu"].is_object()) {
    const nlohmann::json& g = j["gpu"];
    str(g, "device", "gpu", c.device);
    str(g, "hardware_profile", "gpu", c.profile);
    if (g.contains("memory_budget_gb") && !g["memory_budget_gb"].is_null()) {
      if (!g["memory_budget_gb"].is_number() || g["memory_budget_gb"].get<double>() < 0) {
        throw UsageError(path + ": gpu.memory_budget_gb must be a number >= 0");
      }
      c.budget_gb = g["memory_budget_gb"].get<double>();
    }
  }
  if (j.contains("scheduler") && j["scheduler"].is_object()) {
    const nlohmann::json& s = j["scheduler"];
    str(s, "policy", "scheduler", c.policy);
    if (s.contains("pin_layers")) {
      if (!s["pin_layers"].is_array())
        throw UsageError(path + ": scheduler.pin_layers must be an array");
      for (const auto& v : s["pin_layers"]) {
        if (!v.is_number_integer() || v.get<int64_t>() < 0) {
          throw UsageError(path + ": scheduler.pin_layers entries must be layer indices >= 0");
        }
        c.pin_layers.push_back(v.get<int32_t>());
      }
    }
    if (s.contains("defer_experts")) {
      if (!s["defer_experts"].is_number_integer() || s["defer_experts"].get<int64_t>() < 0)
        throw UsageError(path + ": scheduler.defer_experts must be an integer >= 0");
      c.defer_experts = s["defer_experts"].get<int32_t>();
    }
  }
  return c;
}

std::string gb(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f GB", v);
  return buf;
}

double dense_gb(const sched::ModelShape& s) {
  return (s.total_bytes() - s.total_expert_bytes()) / 1e9;
}

// Refuses budgets the hardware cannot hold, naming the numbers.
void check_memory(const PlanConfig& c, const sched::HardwareSpec& hw, const sched::ModelShape& s,
                  double expert_vram_gb, const std::string& profile_path) {
  if (c.device != "none" && c.budget_gb > hw.gpu.vram_gb) {
    throw UsageError("gpu.memory_budget_gb is " + gb(c.budget_gb) + " but " + hw.gpu.name +
                     " in hardware profile " + profile_path + " has " + gb(hw.gpu.vram_gb));
  }
  const double host_gb = s.total_bytes() / 1e9 - expert_vram_gb;
  if (host_gb > hw.cpu.dram_gb) {
    throw UsageError("the model needs " + gb(host_gb) + " of host memory (" +
                     gb(s.total_bytes() / 1e9) + " of weights, " + gb(expert_vram_gb) +
                     " in VRAM) but hardware profile " + profile_path + " has " +
                     gb(hw.cpu.dram_gb));
  }
}

void print_plan(const sched::ReplayResult& r, const sched::ModelShape& s,
                const sched::HardwareSpec& hw, const PlanConfig& c, double budget,
                double expert_gb) {
  std::printf("model    %s: %d layers, %d experts (top-%d), %s, %.1f GB (%.1f GB experts)\n",
              s.name.c_str(), s.n_layer, s.n_expert, s.n_expert_used, s.weight_type.c_str(),
              s.total_bytes() / 1e9, s.total_expert_bytes() / 1e9);
  std::printf("hardware %s (%s)\n", hw.name.c_str(),
              c.device == "none" ? "CPU only" : hw.gpu.name.c_str());
  if (c.device != "none") {
    std::printf(
        "VRAM     budget %.1f GB: dense weights %.1f GB, workspace %.1f GB, experts %.1f GB\n",
        budget, dense_gb(s), kWorkspaceGb, expert_gb);
    std::printf("         %lld expert slots of %.1f MB (%.1f%% of all experts)",
                static_cast<long long>(r.expert_slots), s.expert_bytes / 1e6,
                100.0 * r.expert_slots / (static_cast<double>(s.n_expert) * s.n_moe_layers()));
    std::printf(", pinned layers: %zu\n", c.pin_layers.size());
  }
  std::printf("policy   %s", r.policy.c_str());
  if (c.defer_experts > 0) {
    std::printf(
        ", expert deferral %d (%.2f experts per token deferred)", c.defer_experts,
        r.decode.n_tokens ? static_cast<double>(r.decode.n_deferred) / r.decode.n_tokens : 0.0);
  }
  std::printf("\n");
  for (const auto* ph : {&r.prefill, &r.decode}) {
    const bool pre = ph == &r.prefill;
    const double per = ph->n_tokens ? 1.0 / ph->n_tokens : 0;
    std::printf(
        "%-8s %8.1f tokens/s  per token: attention+dense %.2f ms, experts %.2f ms; busy CPU %.2f "
        "ms, "
        "GPU %.2f ms, PCIe %.2f ms; hit rate %.1f%%\n",
        pre ? "prefill" : "decode", ph->tokens_per_s, ph->attention_us * per / 1e3,
        ph->experts_us * per / 1e3, ph->busy.cpu_us * per / 1e3, ph->busy.gpu_us * per / 1e3,
        ph->busy.pcie_us * per / 1e3, 100.0 * ph->hit_rate());
  }
}

}  // namespace

int cmd_plan(const Args& args) {
  std::string config_path, model, shape_name, type = "q4_k", format = "table";
  ArgReader r(args);
  while (!r.done()) {
    const std::string opt = r.next();
    if (opt == "-h" || opt == "--help") {
      std::printf("%s", kHelp);
      return 0;
    }
    if (opt == "-c" || opt == "--config")
      config_path = r.value(opt);
    else if (opt == "-m" || opt == "--model")
      model = r.value(opt);
    else if (opt == "--shape")
      shape_name = r.value(opt);
    else if (opt == "--type")
      type = r.value(opt);
    else if (opt == "-o")
      format = r.value(opt);
    else
      throw UsageError("unknown option '" + opt + "' (see tandem plan --help)");
  }
  if (config_path.empty()) throw UsageError("-c CONFIG is required");
  if (format != "table" && format != "json") throw UsageError("-o must be table or json");
  PlanConfig c = read_config(config_path);
  if (!model.empty()) c.model = model;
  if (c.model.empty() && shape_name.empty()) {
    throw UsageError("no model: set model.path in the config, or give -m MODEL or --shape NAME");
  }
  const sched::ModelShape shape =
      shape_name.empty() ? shape_from_gguf(c.model) : sched::named_shape(shape_name, type);
  const std::string profile = c.profile.empty() ? kDefaultProfile : c.profile;
  sched::HardwareSpec hw = sched::load_hardware_spec(profile);
  if (c.device == "none") hw.has_gpu = false;
  if (!hw.has_gpu && c.device != "none")
    throw UsageError("hardware profile " + profile + " has no gpu section");
  const double budget = c.device == "none" ? 0.0 : (c.budget_gb > 0 ? c.budget_gb : hw.gpu.vram_gb);
  const double expert_gb =
      std::max(0.0, budget - dense_gb(shape) - kWorkspaceGb) * (c.device != "none");
  check_memory(c, hw, shape, expert_gb, profile);
  std::string policy = c.policy == "auto" ? (hw.has_gpu ? "tandem" : "cpu-experts") : c.policy;
  sched::ReplayOptions opt;
  opt.expert_vram_gb = expert_gb;
  opt.pin_layers = c.pin_layers;
  sched::check_defer_experts(c.defer_experts, shape.n_expert_used, "scheduler.defer_experts");
  opt.defer_experts = c.defer_experts;
  const sched::CostModel cost = sched::CostModel::from_hardware(hw, shape);
  sched::SyntheticTraceConfig tc;
  tc.n_layer = shape.n_moe_layers();
  tc.n_expert = shape.n_expert;
  tc.n_expert_used = shape.n_expert_used;
  const sched::ReplayResult res =
      sched::replay(shape, cost, sched::make_synthetic_trace(tc), policy, opt);
  if (format == "json") {
    nlohmann::json j = res.to_json();
    j["vram"] = {{"budget_gb", budget},
                 {"dense_gb", dense_gb(shape)},
                 {"workspace_gb", kWorkspaceGb},
                 {"experts_gb", expert_gb},
                 {"pin_layers", c.pin_layers}};
    j["defer_experts"] = c.defer_experts;
    std::printf("%s\n", j.dump(2).c_str());
  } else {
    print_plan(res, shape, hw, c, budget, expert_gb);
  }
  return 0;
}

}  // namespace tandem
