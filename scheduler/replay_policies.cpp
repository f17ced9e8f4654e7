// The policies the replay compares, and the replay's outputs (result JSON, Chrome trace).
#include <stdexcept>

#include "scheduler/replay.h"

namespace tandem::sched {
namespace {

// HybriMoE plans with linear cost estimates: the least-squares line (relative error) through
// the device's true curve at 1, 2, 4, ..., 512 tokens, the profiling its paper describes.
LinearCost linear_estimate(const CostModel& cost, Device d) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (double n = 1; n <= 512; n *= 2) {
    const double t = cost.expert_us(d, n);
    const double w = 1.0 / (t * t);
    sw += w, sx += w * n, sy += w * t, sxx += w * n * n, sxy += w * n * t;
  }
  const double b = (sw * sxy - sx * sy) / (sw * sxx - sx * sx);
  return {(sy - b * sx) / sw, b};
}

}  // namespace

std::vector<std::string> policy_names() {
  return {"cpu-experts", "static", "fiddler", "hybrimoe", "tandem"};
}

PolicySpec make_policy(const std::string& name, const CostModel& cost, const ModelShape& shape,
                       Eviction tandem_eviction) {
  PolicySpec p;
  p.name = name;
  const int32_t staging = 2 * shape.n_expert_used;
  if (name == "cpu-experts") {
    p.planner = make_cpu_only_planner();
  } else if (!cost.has_gpu()) {
    throw std::invalid_argument("policy '" + name + "' needs a GPU; the hardware profile has none");
  } else if (name == "static") {
    p.planner = make_static_planner();
    p.cache = PolicySpec::Cache::WholeLayers;
  } else if (name == "fiddler") {
    p.planner = make_fiddler_planner();
    p.cache = PolicySpec::Cache::Popular;
    p.staging_slots = staging;
  } else if (name == "hybrimoe") {
    p.planner = make_hybrimoe_planner(linear_estimate(cost, Device::Cpu),
                                      linear_estimate(cost, Device::Gpu), cost.expert_copy_us());
    p.cache = PolicySpec::Cache::Dynamic;
    p.eviction = Eviction::Score;
    p.prefetch = true;
    p.staging_slots = staging;
  } else if (name == "tandem") {
    p.planner = make_tandem_planner();
    p.cache = PolicySpec::Cache::Dynamic;
    p.eviction = tandem_eviction;
    p.prefetch = true;
    p.uses_pins = true;
    p.price_copies = true;
    p.late_prefetch = true;
    p.defers = true;
    p.staging_slots = staging;
  } else {
    std::string known;
    for (const std::string& n : policy_names()) known += (known.empty() ? "" : ", ") + n;
    throw std::invalid_argument("unknown policy '" + name + "' (known: " + known + ", all)");
  }
  return p;
}

const char* prediction_errors_name(PredictionErrors e) {
  return e == PredictionErrors::Uniform ? "uniform" : "routing";
}

PredictionErrors parse_prediction_errors(const std::string& name) {
  if (name == "routing") return PredictionErrors::LikeRouting;
  if (name == "uniform") return PredictionErrors::Uniform;
  throw std::invalid_argument("unknown prefetch error model '" + name +
                              "' (known: routing, uniform)");
}

void ChromeTrace::begin_process(const std::string& name) {
  const int32_t pid = ++pid_;
  events_.push_back(
      {{"name", "process_name"}, {"ph", "M"}, {"pid", pid}, {"args", {{"name", name}}}});
  const char* lanes[] = {"CPU experts", "GPU compute", "PCIe copies"};
  for (int t = 0; t < 3; ++t) {
    events_.push_back({{"name", "thread_name"},
                       {"ph", "M"},
                       {"pid", pid},
                       {"tid", t + 1},
                       {"args", {{"name", lanes[t]}}}});
  }
}

void ChromeTrace::span(const std::string& name, Lane lane, double ts_us, double dur_us,
                       const std::string& category) {
  events_.push_back({{"name", name},
                     {"cat", category},
                     {"ph", "X"},
                     {"pid", pid_},
                     {"tid", static_cast<int>(lane)},
                     {"ts", ts_us},
                     {"dur", dur_us}});
}

nlohmann::json ChromeTrace::to_json() const {
  return {{"traceEvents", events_}, {"displayTimeUnit", "ms"}};
}

nlohmann::json ReplayResult::to_json() const {
  auto phase = [](const PhaseResult& p) {
    return nlohmann::json{{"tokens", p.n_tokens},
                          {"time_ms", p.time_us / 1e3},
                          {"tokens_per_s", p.tokens_per_s},
                          {"cache_hit_rate", p.hit_rate()},
                          {"deferred_experts", p.n_deferred},
                          {"bytes_copied", p.bytes_copied},
                          {"attention_ms", p.attention_us / 1e3},
                          {"experts_ms", p.experts_us / 1e3},
                          {"cpu_busy_ms", p.busy.cpu_us / 1e3},
                          {"gpu_busy_ms", p.busy.gpu_us / 1e3},
                          {"pcie_busy_ms", p.busy.pcie_us / 1e3}};
  };
  return {{"policy", policy},
          {"decode_tokens_per_s", decode.tokens_per_s},
          {"prefill_tokens_per_s", prefill.tokens_per_s},
          {"cache_hit_rate", decode.hit_rate()},
          {"expert_slots", expert_slots},
          {"prefetched", n_prefetched},
          {"prefetch_used", n_prefetch_used},
          {"prefetch_accuracy", prefetch_accuracy},
          {"wrong_guesses", n_wrong_guesses},
          {"wrong_guesses_cached", n_wrong_guesses_cached},
          {"wrong_guesses_cached_if_uniform", wrong_guesses_cached_if_uniform},
          {"planner_us_per_layer", planner_us_per_layer},
          {"prefill", phase(prefill)},
          {"decode", phase(decode)}};
}

}  // namespace tandem::sched
