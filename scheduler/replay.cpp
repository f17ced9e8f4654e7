#include "scheduler/replay.h"

#include "scheduler/deferral.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <random>
#include <stdexcept>

namespace tandem::sched {
namespace {

// "L3 E17": built by appending (GCC 12 warns falsely on operator+ chains under -O3).
std::string label(const char* prefix, int64_t a, const char* mid = nullptr, int64_t b = 0) {
  std::string out(prefix);
  out.append(std::to_string(a));
  if (mid) out.append(mid).append(std::to_string(b));
  return out;
}

struct InFlight {
  int32_t expert;
  double ready_us;  // absolute
};

// Per-expert totals of one layer's routing.
struct LayerLoad {
  std::vector<int32_t> n_tokens;  // [n_expert]
  std::vector<float> gate_sum;    // [n_expert]
  std::vector<int32_t> active;    // experts with n_tokens > 0, in first-use order
};

LayerLoad load_of(const LayerRouting& r, int32_t n_expert) {
  LayerLoad l{std::vector<int32_t>(n_expert, 0), std::vector<float>(n_expert, 0.0f), {}};
  for (size_t i = 0; i < r.ids.size(); ++i) {
    const int32_t e = r.ids[i];
    if (l.n_tokens[e]++ == 0) l.active.push_back(e);
    l.gate_sum[e] += r.weights[i];
  }
  return l;
}

class Simulation {
 public:
  Simulation(const ModelShape& shape, const CostModel& cost, const RoutingTrace& trace,
             PolicySpec policy, const ReplayOptions& opt, ChromeTrace* timeline)
      : shape_(shape),
        cost_(cost),
        trace_(trace),
        policy_(std::move(policy)),
        opt_(opt),
        timeline_(timeline),
        rng_(opt.seed) {
    accuracy_ = opt.prefetch_accuracy >= 0     ? opt.prefetch_accuracy
                : trace.prefetch_accuracy >= 0 ? trace.prefetch_accuracy
                                               : 0.85;
    inflight_.resize(trace.n_layer);
    seen_tokens_.assign(trace.n_layer, std::vector<double>(trace.n_expert, 0.0));
    last_active_.resize(trace.n_layer);
    n_repeats_.assign(trace.n_layer, 0);
    n_repeat_checks_.assign(trace.n_layer, 0);
  }

  ReplayResult run();

 private:
  void build_cache(const RoutingStep* calibration);
  double dense_us(int32_t n_tokens, int32_t n_ctx, bool with_ffn) const;
  void run_step(const RoutingStep& step, PhaseResult& out, bool traced);
  double run_layer(int32_t l, const RoutingStep& step, double start, PhaseResult& out, bool traced);
  LayerSituation situation(int32_t l, const LayerLoad& load, double moe_start, int32_t n_tokens);
  std::vector<ExpertJob> take_deferred(int32_t l, const LayerRouting& r, LayerSituation& s) const;
  void update_cache(int32_t l, const LayerLoad& load, const LayerSituation& s, const LayerPlan& p);
  void prefetch(int32_t l, const RoutingStep& step, double start, double deadline, bool traced);
  void record_history(int32_t l, const LayerLoad& load, int32_t n_tokens);
  int32_t wrong_guess(int32_t l, const LayerLoad& truth);
  void trace_plan(int32_t l, const LayerSituation& s, const LayerPlan& p, double moe_start);

  const ModelShape& shape_;
  const CostModel& cost_;
  const RoutingTrace& trace_;
  PolicySpec policy_;
  ReplayOptions opt_;
  ChromeTrace* timeline_;
  std::mt19937_64 rng_;
  double accuracy_ = 0.85;
  std::unique_ptr<ExpertCache> cache_;
  std::vector<std::vector<InFlight>> inflight_;  // per layer: prefetches in the air or landed
  // What the replayed routing has shown so far, per layer: tokens per expert, the last step's
  // experts, and how many of single-token steps' experts repeated the step before's.
  std::vector<std::vector<double>> seen_tokens_;
  std::vector<std::vector<int32_t>> last_active_;
  std::vector<int64_t> n_repeats_, n_repeat_checks_;
  double pcie_busy_until_ = 0.0;
  double deferred_until_ = 0.0;  // the CPU finishes the previous layer's deferred experts
  double clock_ = 0.0;
  int32_t n_ctx_ = 0;
  ReplayResult result_;
  double planner_ns_ = 0.0;
  int64_t n_planned_decode_ = 0;
};

void Simulation::build_cache(const RoutingStep* calibration) {
  const int32_t n_layer = trace_.n_layer, n_expert = trace_.n_expert;
  const double budget = opt_.expert_vram_gb * 1e9;
  std::vector<int32_t> slots(n_layer, 0);
  using C = PolicySpec::Cache;
  if (policy_.cache == C::WholeLayers) {
    // llama.cpp --n-cpu-moe N: the first N layers' experts stay on the CPU, the rest on GPU.
    const double layer_bytes = shape_.expert_bytes * n_expert;
    const int32_t n_gpu_layers =
        std::min<int32_t>(n_layer, static_cast<int32_t>(budget / layer_bytes));
    for (int32_t l = n_layer - n_gpu_layers; l < n_layer; ++l) slots[l] = n_expert;
  } else if (policy_.cache != C::None) {
    const double staging = policy_.staging_slots * shape_.expert_bytes;
    const std::vector<int32_t> pins = policy_.uses_pins ? opt_.pin_layers : std::vector<int32_t>{};
    slots = slots_for_budget(std::max(0.0, budget - staging), shape_.expert_bytes, n_layer,
                             n_expert, pins);
  }
  const Eviction ev = policy_.cache == C::Dynamic ? policy_.eviction : Eviction::Fixed;
  cache_ = std::make_unique<ExpertCache>(n_layer, n_expert, slots, ev);
  for (int32_t l = 0; l < n_layer; ++l) {
    std::vector<int32_t> order(n_expert);
    std::iota(order.begin(), order.end(), 0);
    if (calibration) {  // most used first in the profiling prompt
      const LayerLoad load = load_of(calibration->layers[l], n_expert);
      std::stable_sort(order.begin(), order.end(),
                       [&](int32_t a, int32_t b) { return load.n_tokens[a] > load.n_tokens[b]; });
      cache_->record_step(l, load.gate_sum, load.n_tokens, calibration->layers[l].n_tokens);
      record_history(l, load, calibration->layers[l].n_tokens);
    }
    cache_->fill(l, order);
  }
  result_.expert_slots = cache_->total_slots();
}

double Simulation::dense_us(int32_t n_tokens, int32_t n_ctx, bool with_ffn) const {
  const Device d = cost_.has_gpu() ? Device::Gpu : Device::Cpu;
  const double kv_bytes = 4.0 * n_ctx * shape_.n_head_kv * static_cast<double>(shape_.head_dim);
  const double kv_ops =
      4.0 * n_tokens * shape_.n_head * static_cast<double>(n_ctx) * shape_.head_dim;
  double t = cost_.dense_us(d, shape_.attn_bytes + kv_bytes,
                            shape_.attn_ops_per_token() * n_tokens + kv_ops);
  if (with_ffn) {
    const double ops = 2.0 * shape_.dense_ffn_bytes * n_tokens /
                       (shape_.expert_bytes / shape_.expert_ops_per_token() * 2.0);
    t += cost_.dense_us(d, shape_.dense_ffn_bytes, ops);
  }
  return t;
}

LayerSituation Simulation::situation(int32_t l, const LayerLoad& load, double moe_start,
                                     int32_t n_tokens) {
  LayerSituation s;
  const bool gpu = cost_.has_gpu();
  const double shared = shape_.shared_bytes > 0
                            ? cost_.dense_us(gpu ? Device::Gpu : Device::Cpu, shape_.shared_bytes,
                                             shape_.shared_ops_per_token() * n_tokens)
                            : 0.0;
  (gpu ? s.gpu_free_us : s.cpu_free_us) = shared;
  s.pcie_free_us = std::max(0.0, pcie_busy_until_ - moe_start);
  s.n_batch_tokens = n_tokens;
  s.whole_layer_copy_us = gpu ? cost_.copy_us(shape_.expert_bytes * shape_.n_expert) : 0.0;
  const double copy = gpu ? cost_.expert_copy_us() : 0.0;
  if (policy_.price_copies && n_tokens <= shape_.n_expert_used) {
    // In decode the channel's next use is a prefetch for the next layer, which saves about
    // one CPU expert when the predictor is right; a copy now must beat that.
    s.copy_penalty_us = accuracy_ * cost_.expert_us(Device::Cpu, 1);
  }
  for (int32_t e : load.active) {
    ExpertJob j;
    j.expert = e;
    j.n_tokens = load.n_tokens[e];
    j.gate_sum = load.gate_sum[e];
    j.cpu_us = cost_.expert_us(Device::Cpu, j.n_tokens);
    j.gpu_us = gpu ? cost_.expert_us(Device::Gpu, j.n_tokens) : 1e30;
    j.copy_us = copy;
    if (cache_->resident(l, e)) {
      j.residency = Residency::Resident;
    } else {
      for (const InFlight& f : inflight_[l]) {
        if (f.expert != e) continue;
        j.residency = f.ready_us <= moe_start ? Residency::Resident : Residency::InFlight;
        j.ready_us = std::max(0.0, f.ready_us - moe_start);
      }
    }
    if (!gpu) j.residency = Residency::Absent;
    s.jobs.push_back(j);
  }
  return s;
}

std::vector<ExpertJob> Simulation::take_deferred(int32_t l, const LayerRouting& r,
                                                 LayerSituation& s) const {
  const int32_t d = policy_.defers ? opt_.defer_experts : 0;
  if (d <= 0 || l + 1 >= trace_.n_layer || r.n_tokens <= 0) return {};
  // Per expert, how many of its tokens rank it among their d lowest gate weights.
  const int32_t k = static_cast<int32_t>(r.ids.size()) / r.n_tokens;
  std::vector<int32_t> n_deferring(trace_.n_expert, 0);
  std::vector<int32_t> slots;
  for (int32_t t = 0; t < r.n_tokens; ++t) {
    const size_t base = static_cast<size_t>(t) * k;
    lowest_weight_slots(std::span(r.weights.data() + base, static_cast<size_t>(k)), d, slots);
    for (int32_t slot : slots) ++n_deferring[r.ids[base + slot]];
  }
  std::vector<ExpertJob> deferred, kept;
  for (const ExpertJob& j : s.jobs) {
    const bool defer = j.residency == Residency::Absent && n_deferring[j.expert] == j.n_tokens;
    (defer ? deferred : kept).push_back(j);
  }
  s.jobs = std::move(kept);
  return deferred;
}

void Simulation::update_cache(int32_t l, const LayerLoad& load, const LayerSituation& s,
                              const LayerPlan& p) {
  cache_->record_step(l, load.gate_sum, load.n_tokens, s.n_batch_tokens);
  if (cache_->eviction() == Eviction::Fixed) return;
  // Experts on the GPU only for this step (copied or prefetched) may stay, by the policy.
  std::vector<int32_t> transient;
  for (size_t i = 0; i < s.jobs.size(); ++i) {
    if (p.placement[i] == Placement::CopyThenGpu) transient.push_back(s.jobs[i].expert);
  }
  for (const InFlight& f : inflight_[l]) transient.push_back(f.expert);
  for (int32_t e : transient) {
    int32_t victim = -1;
    if (cache_->should_admit(l, e, &victim)) cache_->admit(l, e, victim);
  }
}

void Simulation::prefetch(int32_t l, const RoutingStep& step, double start, double deadline,
                          bool traced) {
  const int32_t next = l + 1;
  if (next >= trace_.n_layer) return;
  const LayerLoad load = load_of(step.layers[next], trace_.n_expert);
  std::vector<int32_t> truth = load.active;
  std::stable_sort(truth.begin(), truth.end(),
                   [&](int32_t a, int32_t b) { return load.gate_sum[a] > load.gate_sum[b]; });
  // The predictor (next layer's router on this layer's hidden state) names each true expert
  // with probability `accuracy_`, else an expert the next layer does not use.
  std::uniform_real_distribution<double> u(0.0, 1.0);
  std::vector<int32_t> predicted;
  // Decode's wrong guesses are counted as the engine counts them (ExpertRunStats), to compare
  // the error models with what a real router does.
  const double uniform_cached =
      step.phase == Phase::Decode ? cache_->resident_share_of_unused(next, load.n_tokens) : 0.0;
  for (int32_t e : truth) {
    const int32_t guess = u(rng_) < accuracy_ ? e : wrong_guess(next, load);
    if (guess < 0) continue;
    if (guess != e && step.phase == Phase::Decode) {
      ++result_.n_wrong_guesses;
      result_.n_wrong_guesses_cached += cache_->resident(next, guess);
      result_.wrong_guesses_cached_if_uniform += uniform_cached;
    }
    if (!cache_->resident(next, guess) &&
        std::find(predicted.begin(), predicted.end(), guess) == predicted.end()) {
      predicted.push_back(guess);
    }
  }
  const double copy = cost_.expert_copy_us();
  // CPU time of the predicted misses after each candidate: a late copy still pays off while
  // the GPU path (wait + compute) ends before the CPU finishes those.
  std::vector<double> cpu_after(predicted.size() + 1, 0.0);
  for (size_t i = predicted.size(); i-- > 0;) {
    cpu_after[i] =
        cpu_after[i + 1] + cost_.expert_us(Device::Cpu, std::max(1, load.n_tokens[predicted[i]]));
  }
  double t = std::max(start, pcie_busy_until_);
  for (size_t i = 0; i < predicted.size(); ++i) {
    const int32_t e = predicted[i];
    if (static_cast<int32_t>(inflight_[next].size()) >= policy_.staging_slots) break;
    const double lands = t + copy;
    const double limit = policy_.late_prefetch
                             ? deadline + cpu_after[i + 1] -
                                   cost_.expert_us(Device::Gpu, std::max(1, load.n_tokens[e]))
                             : deadline;
    if (lands > limit) break;  // would not help the next layer
    if (traced) {
      timeline_->span(label("prefetch L", next, " E", e), ChromeTrace::kPcie, t, copy, "prefetch");
    }
    t = lands;
    inflight_[next].push_back({e, t});
    ++result_.n_prefetched;
    result_.n_prefetch_used += load.n_tokens[e] > 0;
  }
  pcie_busy_until_ = std::max(pcie_busy_until_, t);
}

void Simulation::record_history(int32_t l, const LayerLoad& load, int32_t n_tokens) {
  for (int32_t e : load.active) seen_tokens_[l][e] += load.n_tokens[e];
  std::vector<int32_t>& last = last_active_[l];
  if (n_tokens == 1 && !last.empty()) {
    for (int32_t e : load.active) {
      n_repeats_[l] += std::find(last.begin(), last.end(), e) != last.end();
    }
    n_repeat_checks_[l] += static_cast<int64_t>(load.active.size());
  }
  last = load.active;
}

// PredictionErrors::LikeRouting: a wrong prediction is drawn the way the layer's true experts
// have come so far: one of the layer's last-step experts as often as single-token steps
// repeated those, else an expert in proportion to the tokens it has received. A router that
// errs names experts whose scores are often high, i.e. popular ones, which are often cached;
// and a policy that ranks predictions by popularity or recency cannot tell wrong guesses from
// right ones. Uniform: any unused expert, equally likely. -1 when every expert is used.
int32_t Simulation::wrong_guess(int32_t l, const LayerLoad& truth) {
  if (static_cast<int32_t>(truth.active.size()) >= trace_.n_expert) return -1;
  const bool uniform = opt_.prefetch_errors == PredictionErrors::Uniform;
  const std::vector<int32_t>& last = last_active_[l];
  const double repeat = n_repeat_checks_[l] > 0 ? static_cast<double>(n_repeats_[l]) /
                                                      static_cast<double>(n_repeat_checks_[l])
                                                : 0.0;
  const std::vector<double>& seen = seen_tokens_[l];
  const double total = std::accumulate(seen.begin(), seen.end(), 0.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  for (int attempt = 0; attempt < 64 && !uniform; ++attempt) {
    int32_t e = static_cast<int32_t>(rng_() % trace_.n_expert);
    if (!last.empty() && u(rng_) < repeat) {
      e = last[rng_() % last.size()];
    } else if (total > 0) {
      double x = u(rng_) * total;
      for (e = 0; e + 1 < trace_.n_expert && x >= seen[e]; ++e) x -= seen[e];
    }
    if (truth.n_tokens[e] == 0) return e;
  }
  int32_t e;  // uniform, or the history names only used experts
  do e = static_cast<int32_t>(rng_() % trace_.n_expert);
  while (truth.n_tokens[e] > 0);
  return e;
}

void Simulation::trace_plan(int32_t l, const LayerSituation& s, const LayerPlan& p,
                            double moe_start) {
  const std::string layer = label("L", l);
  double cpu = moe_start + s.cpu_free_us, gpu = moe_start + s.gpu_free_us;
  double pcie = moe_start + s.pcie_free_us;
  if (s.gpu_free_us > 0 && cost_.has_gpu()) {
    timeline_->span("shared " + layer, ChromeTrace::kGpu, moe_start, s.gpu_free_us, "dense");
  }
  if (p.extra_copy_bytes_factor > 0) {
    pcie = std::max(gpu, pcie);
    timeline_->span("copy all experts " + layer, ChromeTrace::kPcie, pcie, s.whole_layer_copy_us,
                    "copy");
    gpu = pcie + s.whole_layer_copy_us;
  }
  std::vector<int32_t> gpu_order;  // resident, then in-flight by arrival, then copies
  for (size_t i = 0; i < s.jobs.size(); ++i) {
    const ExpertJob& j = s.jobs[i];
    const std::string name = layer + label(" E", j.expert, " x", j.n_tokens);
    if (p.placement[i] == Placement::Cpu) {
      timeline_->span(name, ChromeTrace::kCpu, cpu, j.cpu_us, "expert");
      cpu += j.cpu_us;
    } else if (p.placement[i] == Placement::GpuCached || p.extra_copy_bytes_factor > 0) {
      if (j.residency != Residency::InFlight)
        gpu_order.insert(gpu_order.begin(), static_cast<int32_t>(i));
      else
        gpu_order.push_back(static_cast<int32_t>(i));
    }
  }
  for (int32_t i : gpu_order) {
    const ExpertJob& j = s.jobs[i];
    const double begin =
        std::max(gpu, moe_start + (j.residency == Residency::InFlight ? j.ready_us : 0.0));
    timeline_->span(layer + label(" E", j.expert), ChromeTrace::kGpu, begin, j.gpu_us, "expert");
    gpu = begin + j.gpu_us;
  }
  if (p.extra_copy_bytes_factor > 0) return;
  for (int32_t i : p.copy_order) {
    const ExpertJob& j = s.jobs[i];
    const std::string name = layer + label(" E", j.expert);
    timeline_->span("copy " + name, ChromeTrace::kPcie, pcie, j.copy_us, "copy");
    pcie += j.copy_us;
    gpu = std::max(gpu, pcie);
    timeline_->span(name, ChromeTrace::kGpu, gpu, j.gpu_us, "expert");
    gpu += j.gpu_us;
  }
}

double Simulation::run_layer(int32_t l, const RoutingStep& step, double start, PhaseResult& out,
                             bool traced) {
  const int32_t n_tokens = step.layers[l].n_tokens;
  const double attn = dense_us(n_tokens, n_ctx_, false);
  if (traced) {
    timeline_->span(label("attention L", l),
                    cost_.has_gpu() ? ChromeTrace::kGpu : ChromeTrace::kCpu, start, attn, "dense");
  }
  // The previous layer's deferred experts must be added before this layer's experts start.
  const double moe_start = std::max(start + attn, deferred_until_);
  const LayerLoad load = load_of(step.layers[l], trace_.n_expert);
  LayerSituation s = situation(l, load, moe_start, n_tokens);
  const std::vector<ExpertJob> deferred = take_deferred(l, step.layers[l], s);
  const auto t0 = std::chrono::steady_clock::now();
  const LayerPlan p = policy_.planner->plan(s);
  const auto t1 = std::chrono::steady_clock::now();
  if (step.phase == Phase::Decode) {
    planner_ns_ +=
        static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    ++n_planned_decode_;
  }
  const double end = moe_start + p.makespan_us;
  const bool gpu = cost_.has_gpu();
  out.attention_us += attn;
  out.experts_us += p.makespan_us + (moe_start - start - attn);
  // Deferred experts run on the CPU after its share of this layer, past the layer's end.
  double deferred_at = moe_start + p.cpu_finish_us;
  for (const ExpertJob& j : deferred) {
    if (traced) {
      timeline_->span(label("deferred L", l, " E", j.expert), ChromeTrace::kCpu, deferred_at,
                      j.cpu_us, "deferred");
    }
    deferred_at += j.cpu_us;
    ++out.n_lookups;
    ++out.n_deferred;
    out.busy.cpu_us += j.cpu_us;
  }
  deferred_until_ = deferred.empty() ? 0.0 : deferred_at;
  (gpu ? out.busy.gpu_us : out.busy.cpu_us) += attn + s.gpu_free_us + s.cpu_free_us;
  for (size_t i = 0; i < s.jobs.size(); ++i) {
    ++out.n_lookups;
    out.n_hits += s.jobs[i].residency != Residency::Absent;
    (p.placement[i] == Placement::Cpu ? out.busy.cpu_us : out.busy.gpu_us) +=
        p.placement[i] == Placement::Cpu ? s.jobs[i].cpu_us : s.jobs[i].gpu_us;
  }
  const double n_copies = static_cast<double>(p.copy_order.size());
  const double whole = p.extra_copy_bytes_factor;
  out.bytes_copied += (n_copies + whole * shape_.n_expert) * shape_.expert_bytes;
  out.busy.pcie_us += n_copies * cost_.expert_copy_us() + whole * s.whole_layer_copy_us;
  if (n_copies > 0 || whole > 0) {
    pcie_busy_until_ = std::max(pcie_busy_until_, moe_start + p.pcie_finish_us);
  }
  if (traced) trace_plan(l, s, p, moe_start);
  update_cache(l, load, s, p);
  record_history(l, load, n_tokens);
  inflight_[l].clear();
  if (policy_.prefetch) {
    const int64_t before = result_.n_prefetched;
    prefetch(l, step, moe_start, std::max(end + attn, deferred_until_), traced);
    const double n_new = static_cast<double>(result_.n_prefetched - before);
    out.bytes_copied += n_new * shape_.expert_bytes;
    out.busy.pcie_us += n_new * cost_.expert_copy_us();
  }
  return end;
}

void Simulation::run_step(const RoutingStep& step, PhaseResult& out, bool traced) {
  const int32_t n_tokens = step.layers[0].n_tokens;
  n_ctx_ = step.phase == Phase::Prefill ? n_tokens : n_ctx_ + n_tokens;
  double t = clock_;
  for (int32_t d = 0; d < shape_.n_dense_layers; ++d) {
    const double a = dense_us(n_tokens, n_ctx_, true);
    if (traced) {
      timeline_->span(label("dense layer ", d),
                      cost_.has_gpu() ? ChromeTrace::kGpu : ChromeTrace::kCpu, t, a, "dense");
    }
    t += a;
    out.attention_us += a;
    (cost_.has_gpu() ? out.busy.gpu_us : out.busy.cpu_us) += a;
  }
  for (int32_t l = 0; l < trace_.n_layer; ++l) t = run_layer(l, step, t, out, traced);
  // Output head for the last token only.
  const double head = cost_.dense_us(cost_.has_gpu() ? Device::Gpu : Device::Cpu,
                                     shape_.output_bytes / 2, 2.0 * shape_.n_vocab * shape_.n_embd);
  t += head;
  out.attention_us += head;
  out.time_us += t - clock_;
  out.n_tokens += n_tokens;
  clock_ = t;
}

ReplayResult Simulation::run() {
  if (trace_.n_layer != shape_.n_moe_layers() || trace_.n_expert != shape_.n_expert ||
      trace_.n_expert_used != shape_.n_expert_used) {
    throw std::invalid_argument(
        "routing trace (" + std::to_string(trace_.n_layer) + " MoE layers, " +
        std::to_string(trace_.n_expert) + " experts, top-" + std::to_string(trace_.n_expert_used) +
        ") does not match model shape '" + shape_.name + "' (" +
        std::to_string(shape_.n_moe_layers()) + ", " + std::to_string(shape_.n_expert) + ", top-" +
        std::to_string(shape_.n_expert_used) + ")");
  }
  if (trace_.steps.empty()) throw std::invalid_argument("routing trace has no steps");
  // The measured request is the last sequence; an earlier prefill profiles expert popularity.
  const int32_t seq = trace_.steps.back().seq;
  const RoutingStep* calibration = nullptr;
  for (const RoutingStep& s : trace_.steps) {
    if (s.phase == Phase::Prefill && (s.seq != seq || !calibration)) {
      calibration = &s;
      if (s.seq != seq) break;
    }
  }
  build_cache(calibration);
  result_.policy = policy_.name;
  if (timeline_) timeline_->begin_process(policy_.name);
  int32_t n_traced_decode = 0;
  for (const RoutingStep& s : trace_.steps) {
    if (s.seq != seq) continue;
    const bool prefill = s.phase == Phase::Prefill;
    const bool traced = timeline_ && (prefill || n_traced_decode++ < opt_.trace_decode_steps);
    run_step(s, prefill ? result_.prefill : result_.decode, traced);
  }
  for (PhaseResult* p : {&result_.prefill, &result_.decode}) {
    p->tokens_per_s = p->time_us > 0 ? 1e6 * static_cast<double>(p->n_tokens) / p->time_us : 0.0;
  }
  result_.prefetch_accuracy = accuracy_;
  result_.planner_us_per_layer =
      n_planned_decode_ ? planner_ns_ / 1e3 / static_cast<double>(n_planned_decode_) : 0.0;
  return result_;
}

}  // namespace

ReplayResult replay(const ModelShape& shape, const CostModel& cost, const RoutingTrace& trace,
                    const std::string& policy, const ReplayOptions& options,
                    ChromeTrace* timeline) {
  Simulation sim(shape, cost, trace, make_policy(policy, cost, shape, options.tandem_eviction),
                 options, timeline);
  return sim.run();
}

}  // namespace tandem::sched
