// The replay simulator: runs a routing trace through a policy on a modelled clock. Per layer:
// attention (and the shared expert) on the GPU, then the layer's experts split by the policy
// over CPU, GPU and the PCIe channel; prefetch copies for the next layer run on the channel
// while the layer computes. Reports prefill and decode tokens/s, cache hit rate, bytes copied
// and per-device busy time, and can write the timeline as a Chrome/Perfetto trace.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/cost_model.h"
#include "scheduler/expert_cache.h"
#include "scheduler/model_shape.h"
#include "scheduler/planner.h"
#include "scheduler/routing_trace.h"

namespace tandem::sched {

// Chrome trace events (ph "X", ts/dur in microseconds): pid 1, tid 1 CPU, 2 GPU, 3 PCIe.
class ChromeTrace {
 public:
  enum Lane { kCpu = 1, kGpu = 2, kPcie = 3 };
  void span(const std::string& name, Lane lane, double ts_us, double dur_us,
            const std::string& category);
  // Starts a new process (pid 1, 2, ...) so several replays fit one file.
  void begin_process(const std::string& name);
  nlohmann::json to_json() const;
  size_t size() const { return events_.size(); }

 private:
  int32_t pid_ = 0;
  std::vector<nlohmann::json> events_;
};

// A policy: how it plans each layer and how it manages the expert cache.
struct PolicySpec {
  std::string name;
  std::unique_ptr<Planner> planner;
  enum class Cache { None, WholeLayers, Popular, Dynamic } cache = Cache::None;
  Eviction eviction = Eviction::Fixed;
  bool prefetch = false;
  bool uses_pins = false;  // honours ReplayOptions::pin_layers
  // Prices on-demand copies in decode by the prefetch they displace (LayerSituation).
  bool price_copies = false;
  // Prefetches may land after the next layer starts, while its CPU work still hides them
  // (the planner then waits for them or runs them on the CPU); else they must land before.
  bool late_prefetch = false;
  bool defers = false;        // honours ReplayOptions::defer_experts
  int32_t staging_slots = 0;  // VRAM for experts copied per step (taken from the budget)
};

std::vector<std::string> policy_names();  // cpu-experts, static, fiddler, hybrimoe, tandem
// Throws std::invalid_argument for an unknown name.
PolicySpec make_policy(const std::string& name, const CostModel& cost, const ModelShape& shape,
                       Eviction tandem_eviction = Eviction::NextUse);

// How the simulated prefetch predictor's wrong guesses are drawn (see wrong_guess in replay.cpp).
enum class PredictionErrors { LikeRouting, Uniform };
const char* prediction_errors_name(PredictionErrors e);
// "routing" | "uniform"; throws std::invalid_argument naming the value.
PredictionErrors parse_prediction_errors(const std::string& name);

struct ReplayOptions {
  double expert_vram_gb = 0.0;      // VRAM for routed experts, GB (1e9 bytes)
  std::vector<int32_t> pin_layers;  // MoE layers kept fully resident (dynamic caches)
  double prefetch_accuracy = -1.0;  // < 0: the trace's, else 0.85
  PredictionErrors prefetch_errors = PredictionErrors::LikeRouting;
  Eviction tandem_eviction = Eviction::NextUse;
  // Expert deferral (tandem; 0: off): each token's `defer_experts` lowest-weight experts of a
  // layer may finish while the next layer's attention runs. An expert is deferred when all its
  // tokens defer it and it is not on the GPU; it runs on the CPU after the layer's CPU experts,
  // and the next layer's experts start when it is done. Never in the last layer.
  int32_t defer_experts = 0;
  uint64_t seed = 1;
  int32_t trace_decode_steps = 2;  // decode steps written to the Chrome trace
};

struct DeviceBusy {
  double cpu_us = 0.0;
  double gpu_us = 0.0;
  double pcie_us = 0.0;
};

struct PhaseResult {
  int64_t n_tokens = 0;
  double time_us = 0.0;
  double tokens_per_s = 0.0;
  int64_t n_lookups = 0;   // activated (layer, expert) pairs
  int64_t n_hits = 0;      // of those, on the GPU (resident or prefetched) when planned
  int64_t n_deferred = 0;  // of those, deferred past the next layer's attention
  double bytes_copied = 0.0;
  double attention_us = 0.0;  // attention, dense FFN, shared experts, output head
  double experts_us = 0.0;    // the layers' expert makespans
  DeviceBusy busy;
  double hit_rate() const { return n_lookups ? static_cast<double>(n_hits) / n_lookups : 0.0; }
};

struct ReplayResult {
  std::string policy;
  PhaseResult prefill, decode;
  int64_t expert_slots = 0;
  int64_t n_prefetched = 0;
  int64_t n_prefetch_used = 0;
  double prefetch_accuracy = 0.0;
  // Decode predictions that named an unused expert, those of them already cached, and the
  // expected count of cached ones had every wrong guess been uniform over the unused experts.
  int64_t n_wrong_guesses = 0;
  int64_t n_wrong_guesses_cached = 0;
  double wrong_guesses_cached_if_uniform = 0.0;
  double planner_us_per_layer = 0.0;  // wall time of the planner per decode layer
  nlohmann::json to_json() const;
};

// Throws std::invalid_argument when the trace does not match the shape (layers, experts).
ReplayResult replay(const ModelShape& shape, const CostModel& cost, const RoutingTrace& trace,
                    const std::string& policy, const ReplayOptions& options,
                    ChromeTrace* timeline = nullptr);

}  // namespace tandem::sched
