#include "server/accelerator_options.h"

#include <algorithm>
#include <cstdio>
#include <vector>

#include "scheduler/deferral.h"
#include "scheduler/replay.h"

namespace tandem {

bool AcceleratorSetup::parse_option(const std::string& a, ArgReader& r) {
  if (a == "--gpu") {
    gpu.device = r.value(a);
    try {
      validate_gpu_device(gpu.device);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string("option --gpu: ") + e.what());
    }
  } else if (a == "--gpu-budget") {
    gpu.memory_budget_gb = r.float_value(a, 0, 1 << 20);
  } else if (a == "--expert-cache") {
    gpu.expert_cache_gb = r.float_value(a, 0, 1 << 20);
  } else if (a == "--hardware") {
    gpu.hardware_profile = r.value(a);
  } else if (a == "--policy") {
    policy = r.value(a);
    validate_policy(policy, "option --policy");
  } else if (a == "--pin-layers") {
    pin_layers = parse_int_list(a, r.value(a));
  } else if (a == "--eviction") {
    eviction = r.value(a);
    validate_eviction(eviction, "option --eviction");
  } else if (a == "--defer-experts") {
    defer_experts = static_cast<int32_t>(r.int_value(a, 0, 1024));
  } else if (a == "--record-routing") {
    routing_path = r.value(a);
  } else if (a == "--trace") {
    trace_path = r.value(a);
  } else {
    return false;
  }
  return true;
}

void AcceleratorSetup::apply(EngineOptions& options, const Model& model) {
  if (!trace_path.empty()) trace_ = std::make_unique<TraceRecorder>();
  if (!routing_path.empty()) {
    routing_ = std::make_unique<RoutingRecorder>(routing_path, model);
    RoutingRecorder* recorder = routing_.get();
    options.routing_observer = [recorder](int32_t layer, std::span<const BatchEntry> batch,
                                          const Routing& routing) {
      recorder->observe(layer, batch, routing);
    };
  }
  sched::check_defer_experts(defer_experts, model.spec().n_expert_used,
                             "--defer-experts / scheduler.defer_experts");
  options.defer_experts = defer_experts;
  for (int32_t l : pin_layers) {
    if (l < 0 || l >= model.spec().n_layer) {
      throw UsageError("--pin-layers / scheduler.pin_layers: layer " + std::to_string(l) +
                       " is outside the model's " + std::to_string(model.spec().n_layer) +
                       " layers");
    }
  }
  options.pin_layers = pin_layers;
  if (!pin_layers.empty() && policy != "auto" && policy != "tandem") {
    std::fprintf(stderr,
                 "warning: --pin-layers / scheduler.pin_layers apply to the tandem policy; "
                 "policy '%s' ignores them\n",
                 policy.c_str());
  }
  options.expert_eviction = eviction;
  std::string log;
  accelerator_ = make_accelerator(gpu, trace_.get(), &log);
  if (!log.empty()) std::fprintf(stderr, "%s\n", log.c_str());
  options.trace = trace_.get();
  options.accelerator = accelerator_.get();
  if (accelerator_) {
    options.expert_cache_bytes = expert_cache_budget(gpu, *accelerator_);
    options.expert_policy = policy == "auto" ? "tandem" : policy;
    options.hardware_profile = gpu.hardware_profile;
  }
}

void validate_policy(const std::string& name, const std::string& where) {
  if (name == "auto") return;
  const std::vector<std::string> names = sched::policy_names();
  if (std::find(names.begin(), names.end(), name) != names.end()) return;
  std::string list = "auto";
  for (const std::string& n : names) list += ", " + n;
  throw UsageError(where + ": unknown policy '" + name + "' (" + list + ")");
}

void validate_eviction(const std::string& name, const std::string& where) {
  if (name != "fixed") {
    try {
      sched::parse_eviction(name);
      return;
    } catch (const std::invalid_argument&) {
    }
  }
  throw UsageError(where + ": unknown cache eviction '" + name + "' (next-use, score, lru, lfu)");
}

void AcceleratorSetup::finish() const {
  if (!trace_) return;
  trace_->write_chrome_trace(trace_path);
  std::fprintf(stderr, "trace: %zu spans written to %s (open in ui.perfetto.dev)\n", trace_->size(),
               trace_path.c_str());
}

}  // namespace tandem
