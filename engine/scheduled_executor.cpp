// The hybrid MoE executor driven by the scheduler: per layer, a policy (scheduler/replay.h:
// tandem, hybrimoe, fiddler, static, cpu-experts) places each activated expert on the CPU, on
// the accelerator from its cache, or on the accelerator after a copy; the expert cache admits
// and evicts on the policy's rule; copies run on the copy stream and the compute stream waits
// for them, while the CPU experts run at the same time.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include "cpu/interleave.h"
#include "engine/device_experts.h"
#include "engine/expert_executor.h"
#include "engine/model.h"
#include "engine/side_thread.h"
#include "engine/trace.h"
#include "gpu/accelerator.h"
#include "gpu/accelerator_factory.h"
#include "scheduler/expert_cache.h"
#include "scheduler/hardware.h"
#include "scheduler/replay.h"

namespace tandem {
namespace {

sched::ModelShape shape_of(const Model& model, uint64_t expert_bytes) {
  const ModelSpec& s = model.spec();
  const LayerWeights& w = model.layers().front();
  sched::ShapeHparams h;
  h.name = s.arch;
  h.expert_type = type_name(file_type_of(w.gate_exps.type));  // the cost model knows file types
  h.n_layer = s.n_layer;
  h.n_expert = s.n_expert;
  h.n_expert_used = s.n_expert_used;
  h.n_embd = s.n_embd;
  h.n_ff_expert = s.n_ff_expert;
  h.n_head = s.n_head;
  h.n_head_kv = s.n_head_kv;
  h.head_dim = s.head_dim;
  h.n_vocab = s.n_vocab;
  h.expert_bytes = static_cast<double>(expert_bytes);
  return sched::shape_from_hparams(h);
}

class ScheduledExpertExecutor final : public ExpertExecutor {
 public:
  ScheduledExpertExecutor(const Model& model, Accelerator& acc, uint64_t cache_bytes,
                          TraceRecorder* trace, const SchedulerSettings& settings)
      : model_(model),
        acc_(acc),
        slots_(model, acc, cache_bytes),
        runner_(model, acc, slots_, /*time_ffn=*/true),
        trace_(trace) {
    const ModelSpec& s = model.spec();
    const sched::ModelShape shape = shape_of(model, slots_.slot_bytes());
    const std::string profile = settings.hardware_profile.empty() ? default_hardware_profile_path()
                                                                  : settings.hardware_profile;
    cost_ = sched::CostModel::from_hardware(sched::load_hardware_spec(profile), shape);
    policy_ =
        sched::make_policy(settings.policy, cost_, shape, sched::parse_eviction(settings.eviction));
    expert_type_ = shape.weight_type;
    using Cache = sched::PolicySpec::Cache;
    // Slots for experts copied in one step: the policy's staging, or a whole layer for the
    // llama.cpp-style policies that copy every expert of a layer in long prompts.
    const int32_t n_slots = slots_.n_slots();
    const int32_t staging_wanted =
        policy_.cache == Cache::None || policy_.cache == Cache::WholeLayers ? s.n_expert
                                                                            : policy_.staging_slots;
    const int32_t n_staging = std::min(n_slots, staging_wanted);
    const int32_t n_cached = policy_.cache == Cache::None ? 0 : n_slots - n_staging;
    std::vector<int32_t> per_layer(s.n_layer, 0);
    if (policy_.cache == Cache::WholeLayers) {
      // llama.cpp --n-cpu-moe: the last layers' experts, whole layers only.
      int32_t left = n_cached;
      for (int32_t l = s.n_layer - 1; l >= 0 && left >= s.n_expert; --l, left -= s.n_expert) {
        per_layer[l] = s.n_expert;
      }
    } else if (n_cached > 0 || (policy_.uses_pins && !settings.pin_layers.empty())) {
      // Pins with no room for them are refused by slots_for_budget, naming both sizes.
      per_layer =
          sched::slots_for_budget(static_cast<double>(n_cached) * slots_.slot_bytes(),
                                  static_cast<double>(slots_.slot_bytes()), s.n_layer, s.n_expert,
                                  policy_.uses_pins ? settings.pin_layers : std::vector<int32_t>{});
    }
    const sched::Eviction eviction =
        policy_.cache == Cache::Dynamic ? policy_.eviction : sched::Eviction::Fixed;
    cache_ = std::make_unique<sched::ExpertCache>(s.n_layer, s.n_expert, per_layer, eviction);
    // Initial residents: experts in id order per layer; the cache keeps them or swaps them.
    int32_t slot = 0;
    for (int32_t l = 0; l < s.n_layer; ++l) {
      std::vector<int32_t> experts;
      for (int32_t e = 0; e < per_layer[l] && slot < n_slots - n_staging; ++e) {
        experts.push_back(e);
        slots_.load(slot++, l, e);
      }
      cache_->fill(l, experts);
    }
    for (int32_t i = slot; i < n_slots; ++i) staging_.push_back(i);
    // Prefetching policies keep two small sets of staging slots for the next layer's predicted
    // experts, one per layer parity, so a prefetch never overwrites a slot the current layer's
    // compute still reads.
    const int32_t n_prefetch = policy_.prefetch
                                   ? std::min<int32_t>((s.n_expert_used + 1) / 2,
                                                       static_cast<int32_t>(staging_.size()) / 3)
                                   : 0;
    for (int parity = 0; parity < 2; ++parity) {
      for (int32_t i = 0; i < n_prefetch; ++i) {
        prefetch_slots_[parity].push_back(staging_.back());
        staging_.pop_back();
      }
    }
    prefetched_.resize(s.n_layer);
    predicted_.resize(s.n_layer);
    predicted_tokens_.resize(s.n_layer);
    attention_bytes_ = shape.attn_bytes;
    attention_ops_per_token_ = shape.attn_ops_per_token();
    acc_.synchronize(Stream::Copy);
  }

  bool wants_prediction() const override { return !prefetch_slots_[0].empty(); }

  void predict(int32_t il, const Routing& predicted) override {
    // The layer's predicted experts, most gate weight first.
    std::vector<float> weight(static_cast<size_t>(model_.spec().n_expert), 0.0f);
    for (size_t i = 0; i < predicted.expert.size(); ++i) {
      weight[predicted.expert[i]] += predicted.weight[i];
    }
    std::vector<int32_t>& p = predicted_[il];
    p.clear();
    predicted_tokens_[il].assign(weight.size(), 0);
    for (size_t i = 0; i < predicted.expert.size(); ++i)
      ++predicted_tokens_[il][predicted.expert[i]];
    for (int32_t e = 0; e < static_cast<int32_t>(weight.size()); ++e) {
      if (weight[e] > 0) p.push_back(e);
    }
    std::stable_sort(p.begin(), p.end(),
                     [&](int32_t a, int32_t b) { return weight[a] > weight[b]; });
  }

  int32_t cached_experts(int32_t layer) const override {
    return static_cast<int32_t>(cache_->resident_experts(layer).size());
  }

  void run_layer(int32_t il, const Routing& routing, const std::vector<ExpertTokens>& groups,
                 const float* xn, MoeScratch& scratch, CpuArena* arena) override {
    const ModelSpec& s = model_.spec();
    const double now = host_us();
    // Host time of the scheduling itself, the queueing of device work and the wait for it.
    ScopedSpan plan_span(trace_, span_name(il, "plan"), "moe", "scheduler");
    situation_.jobs.clear();
    active_.clear();
    gate_sum_.assign(static_cast<size_t>(s.n_expert), 0.0f);
    tokens_of_.assign(static_cast<size_t>(s.n_expert), 0);
    for (const ExpertTokens& g : groups) {
      if (g.token.empty()) continue;
      sched::ExpertJob job;
      job.expert = g.expert;
      job.n_tokens = static_cast<int32_t>(g.token.size());
      for (size_t i = 0; i < g.token.size(); ++i) {
        job.gate_sum += routing.weight[static_cast<size_t>(g.token[i]) * routing.k + g.slot[i]];
      }
      gate_sum_[g.expert] = job.gate_sum;
      tokens_of_[g.expert] = job.n_tokens;
      job.residency = sched::Residency::Absent;
      if (cache_->resident(il, g.expert)) {
        job.residency = sched::Residency::Resident;
      } else if (const Prefetch* p = prefetched(il, g.expert)) {
        // A prefetch predicted to land later is in flight: the planner waits for it or runs
        // the expert on the CPU.
        job.residency =
            p->lands_at_us > now ? sched::Residency::InFlight : sched::Residency::Resident;
        job.ready_us = std::max(0.0, p->lands_at_us - now);
      }
      if (!predicted_[il].empty()) {
        ++stats_.predicted_experts;
        stats_.predicted_correct +=
            std::count(predicted_[il].begin(), predicted_[il].end(), g.expert) > 0;
      }
      job.cpu_us = cost_.expert_us(sched::Device::Cpu, expert_type_, job.n_tokens);
      job.gpu_us = cost_.expert_us(sched::Device::Gpu, expert_type_, job.n_tokens);
      job.copy_us = cost_.expert_copy_us();
      situation_.jobs.push_back(job);
      active_.push_back(&g);
    }
    count_wrong_predictions(il);
    situation_.pcie_free_us = std::max(0.0, pcie_free_at_us_ - now);
    situation_.copy_penalty_us = 0.0;
    if (policy_.price_copies && routing.n_tokens <= s.n_expert_used) {
      // As in the replay (scheduler/replay.cpp): in decode the link's next use is a prefetch
      // that saves about one CPU expert when the prediction is right.
      situation_.copy_penalty_us =
          prediction_accuracy() * cost_.expert_us(sched::Device::Cpu, expert_type_, 1);
    }
    situation_.n_batch_tokens = routing.n_tokens;
    situation_.whole_layer_copy_us =
        cost_.copy_us(static_cast<double>(slots_.slot_bytes()) * s.n_expert);
    const sched::LayerPlan plan = policy_.planner->plan(situation_);
    plan_span.finish();
    ScopedSpan copy_span(trace_, span_name(il, "copies"), "moe", "scheduler");

    cpu_groups_.clear();
    gpu_.clear();
    from_prefetch_.clear();
    // Cached experts first, so a copy never evicts an expert this layer still computes.
    for (size_t j = 0; j < active_.size(); ++j) {
      const ExpertTokens* g = active_[j];
      if (plan.placement[j] != sched::Placement::GpuCached) continue;
      if (cache_->resident(il, g->expert)) {
        gpu_.push_back({g, slots_.slot_of(il, g->expert)});
        ++stats_.cache_hits;
      } else if (const Prefetch* p = prefetched(il, g->expert)) {
        from_prefetch_.push_back({g, p->slot});
        ++stats_.prefetch_hits;
      }
    }
    const size_t n_cached = gpu_.size();
    size_t next_staging = 0;
    for (size_t j = 0; j < active_.size(); ++j) {
      const ExpertTokens* g = active_[j];
      const sched::Placement p = plan.placement[j];
      if (p == sched::Placement::GpuCached &&
          (cache_->resident(il, g->expert) || prefetched(il, g->expert))) {
        continue;
      }
      if (p == sched::Placement::CopyThenGpu) {
        const int32_t slot = slot_for_copy(il, g->expert, &next_staging);
        if (slot >= 0) {
          // Queued at once: the slot table must name the expert before the next admission
          // picks a victim, or an expert admitted a moment ago would look slot-less.
          timed_load(slot, il, g->expert);
          gpu_.push_back({g, slot});
          ++stats_.copied_experts;
          stats_.copied_bytes += slots_.slot_bytes();
          continue;
        }
      }
      cpu_groups_.push_back(g);  // planned on the CPU, or no slot free for the copy
    }
    // Prefetched experts run after the cached ones and before this layer's copies.
    gpu_.insert(gpu_.begin() + static_cast<std::ptrdiff_t>(n_cached), from_prefetch_.begin(),
                from_prefetch_.end());
    if (!plan.copy_order.empty()) {
      pcie_free_at_us_ = std::max(pcie_free_at_us_, now + plan.pcie_finish_us);
    }
    if (il + 1 < model_.spec().n_layer) issue_prefetches(il + 1, now, plan, routing.n_tokens);
    copy_span.finish();
    const auto queue = [this, il, xn] {
      ScopedSpan queue_span(trace_, span_name(il, "queue"), "moe", "device queue");
      runner_.enqueue(gpu_, xn);
    };
    // With experts on both sides the accelerator's work is queued from the side thread while
    // this one runs the CPU's: the CPU experts need not wait for the driver calls.
    const bool beside = !gpu_.empty() && !cpu_groups_.empty();
    if (beside) {
      side_.run(queue);
    } else if (!gpu_.empty()) {
      queue();
    }
    if (!cpu_groups_.empty()) {
      char label[48];
      std::snprintf(label, sizeof label, "L%d %zu experts", il, cpu_groups_.size());
      ScopedSpan span(trace_, label, "moe", "cpu experts");
      const auto t0 = std::chrono::steady_clock::now();
      try {
        run_experts(s, model_.layers()[il], cpu_groups_, routing, xn, scratch, arena);
      } catch (...) {
        if (beside) side_.join_quietly();  // the queued task reads this executor's members
        throw;
      }
      const std::chrono::duration<double, std::micro> took = std::chrono::steady_clock::now() - t0;
      for (const ExpertTokens* g : cpu_groups_) {
        ++stats_.cpu_experts;
        stats_.cpu_tokens += g->token.size();
      }
      stats_.cpu_expert_seconds += took.count() / 1e6;
      stats_.cost_observations += observe_shares(sched::Device::Cpu, cpu_groups_, took.count());
      stats_.cpu_cost_error = cost_.prediction_error(sched::Device::Cpu);
    }
    if (beside) side_.join();
    if (!gpu_.empty()) {
      ScopedSpan wait_span(trace_, span_name(il, "wait"), "moe", "scheduler");
      runner_.finish(gpu_, routing, scratch.slot_out.data());
      wait_span.finish();
      gpu_groups_.clear();
      for (const DeviceExpertRunner::Job& j : gpu_) {
        ++stats_.gpu_experts;
        stats_.gpu_tokens += j.group->token.size();
        gpu_groups_.push_back(j.group);
      }
      const double us = runner_.ffn_us();
      if (us > 0) stats_.gpu_expert_seconds += us / 1e6;
      stats_.gpu_cost_observations += observe_shares(sched::Device::Gpu, gpu_groups_, us);
      stats_.gpu_cost_error = cost_.prediction_error(sched::Device::Gpu);
    }
    observe_copies();
    cache_->record_step(il, gate_sum_, tokens_of_, routing.n_tokens);
    admit_prefetched(il);
  }

 private:
  struct Prefetch {
    int32_t expert;
    int32_t slot;
    double lands_at_us;  // predicted, on the host clock (host_us)
  };

  // Queues the copy of (layer, expert) into `slot` between two copy-stream events, so the copy
  // time can be read back and fed to the cost model once it has run.
  void timed_load(int32_t slot, int32_t layer, int32_t expert) {
    const Event start = acc_.record(Stream::Copy);
    pending_copies_.push_back({start, slots_.load(slot, layer, expert), 0});
  }

  // Copies whose events have completed teach the cost model their time; one the device cannot
  // time (not done yet) waits for a later layer, and is dropped after a few.
  void observe_copies() {
    constexpr int32_t kMaxTries = 4;
    size_t kept = 0;
    for (PendingCopy& c : pending_copies_) {
      const double us = acc_.elapsed_us(c.start, c.done);
      if (us > 0) {
        cost_.observe_copy(static_cast<double>(slots_.slot_bytes()), us);
        ++stats_.copy_cost_observations;
      } else if (++c.tries < kMaxTries) {
        pending_copies_[kept++] = c;
      }
    }
    pending_copies_.resize(kept);
    stats_.copy_cost_error = cost_.copy_prediction_error();
  }

  // A device ran a layer's experts as one batch: each gets the measured time in proportion to
  // its prediction, so the cost model learns the device's level and refits its curve (for the
  // accelerator, batching's saved launches included). Returns the observations made.
  uint64_t observe_shares(sched::Device device, const std::vector<const ExpertTokens*>& groups,
                          double measured_us) {
    // Shares first: an observation may refit the curve the later shares would be read from.
    double predicted = 0;
    shares_.clear();
    for (const ExpertTokens* g : groups) {
      shares_.push_back(cost_.expert_us(device, expert_type_, g->token.size()));
      predicted += shares_.back();
    }
    if (!(predicted > 0) || !(measured_us > 0)) return 0;
    for (size_t i = 0; i < groups.size(); ++i) {
      cost_.observe(device, static_cast<double>(groups[i]->token.size()),
                    measured_us * shares_[i] / predicted);
    }
    return groups.size();
  }

  // "L<layer> <what>": a layer's span in the trace; nothing is formatted without one.
  std::string span_name(int32_t il, const char* what) const {
    if (!trace_) return {};
    char name[48];
    std::snprintf(name, sizeof name, "L%d %s", il, what);
    return name;
  }

  // Predicted experts the layer did not use, and how many of them were cached anyway (cost no
  // copy), beside what uniformly random wrong guesses would find cached: measures whether a
  // real router's mistakes name popular experts (`tandem sim --prefetch-errors`).
  void count_wrong_predictions(int32_t il) {
    const std::vector<int32_t>& predicted = predicted_[il];
    if (predicted.empty()) return;
    const double uniform_cached = cache_->resident_share_of_unused(il, tokens_of_);
    for (int32_t e : predicted) {
      if (tokens_of_[e] > 0) continue;
      ++stats_.predicted_wrong;
      stats_.predicted_wrong_cached += cache_->resident(il, e);
      stats_.predicted_wrong_cached_if_uniform += uniform_cached;
    }
  }

  const Prefetch* prefetched(int32_t il, int32_t expert) const {
    for (const Prefetch& p : prefetched_[il]) {
      if (p.expert == expert) return &p;
    }
    return nullptr;
  }

  // Copies layer il's predicted experts that are not cached into its parity's prefetch slots,
  // after layer il - 1's own copies on the copy stream, while each is predicted to help: to land
  // before layer il's experts start (`now`, when layer il - 1's experts started, plus their
  // planned makespan and an estimate of il's attention), or, for policies with late prefetch,
  // before the GPU path (landing + compute) would end later than the CPU doing the remaining
  // predicted experts. Without the limit the queue of copies grows by every layer's misses,
  // and each layer's device work waits for copies issued long before.
  void issue_prefetches(int32_t il, double now, const sched::LayerPlan& plan, int32_t n_tokens) {
    std::vector<int32_t>& slots = prefetch_slots_[il % 2];
    prefetched_[il].clear();
    candidates_.clear();
    for (int32_t e : predicted_[il]) {
      if (!cache_->resident(il, e)) candidates_.push_back(e);
    }
    if (candidates_.size() > slots.size()) candidates_.resize(slots.size());
    const auto tokens = [&](int32_t e) { return std::max(1, predicted_tokens_[il][e]); };
    cpu_after_.assign(candidates_.size() + 1, 0.0);
    for (size_t i = candidates_.size(); i-- > 0;) {
      cpu_after_[i] = cpu_after_[i + 1] +
                      cost_.expert_us(sched::Device::Cpu, expert_type_, tokens(candidates_[i]));
    }
    const double deadline =
        now + plan.makespan_us +
        cost_.dense_us(sched::Device::Cpu, attention_bytes_, attention_ops_per_token_ * n_tokens);
    const double copy_us = cost_.expert_copy_us();
    double t = std::max(now, pcie_free_at_us_);
    for (size_t i = 0; i < candidates_.size(); ++i) {
      const int32_t e = candidates_[i];
      const double lands = t + copy_us;
      const double limit = policy_.late_prefetch
                               ? deadline + cpu_after_[i + 1] -
                                     cost_.expert_us(sched::Device::Gpu, expert_type_, tokens(e))
                               : deadline;
      if (lands > limit) break;
      t = lands;
      timed_load(slots[i], il, e);
      prefetched_[il].push_back({e, slots[i], lands});
      ++stats_.prefetched_experts;
      ++stats_.copied_experts;
      stats_.copied_bytes += slots_.slot_bytes();
    }
    pcie_free_at_us_ = std::max(pcie_free_at_us_, t);
  }

  // Share of activated experts the predictions named so far (0.85, the replay's default, until
  // enough have been seen).
  double prediction_accuracy() const {
    if (stats_.predicted_experts < 100) return 0.85;
    return static_cast<double>(stats_.predicted_correct) /
           static_cast<double>(stats_.predicted_experts);
  }

  static double host_us() {
    return std::chrono::duration<double, std::micro>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
  }

  // A prefetched expert the layer used may stay: when the cache admits it, its slot joins the
  // cache and the evicted expert's slot takes its place among the prefetch slots.
  void admit_prefetched(int32_t il) {
    std::vector<int32_t>& slots = prefetch_slots_[il % 2];
    for (const Prefetch& p : prefetched_[il]) {
      if (gate_sum_[p.expert] <= 0) continue;
      int32_t victim = -1;
      if (!cache_->should_admit(il, p.expert, &victim) || victim < 0) continue;
      const int32_t victim_slot = slots_.slot_of(il, victim);
      if (victim_slot < 0) continue;
      cache_->admit(il, p.expert, victim);
      slots_.forget(victim_slot);
      std::replace(slots.begin(), slots.end(), p.slot, victim_slot);
    }
    prefetched_[il].clear();
    predicted_[il].clear();
  }

  // A slot for an expert copied this step: the cache's, when the policy admits it (evicting
  // its victim), else a staging slot not yet used in this layer; -1 when none is left.
  int32_t slot_for_copy(int32_t il, int32_t expert, size_t* next_staging) {
    int32_t victim = -1;
    if (cache_->should_admit(il, expert, &victim) && victim >= 0) {
      const int32_t slot = slots_.slot_of(il, victim);
      if (slot >= 0 && !used_this_layer(slot)) {
        cache_->admit(il, expert, victim);
        return slot;
      }
    }
    if (*next_staging < staging_.size()) return staging_[(*next_staging)++];
    return -1;
  }

  bool used_this_layer(int32_t slot) const {
    return std::any_of(gpu_.begin(), gpu_.end(),
                       [slot](const DeviceExpertRunner::Job& w) { return w.slot == slot; });
  }

  const Model& model_;
  Accelerator& acc_;
  DeviceExpertSlots slots_;
  DeviceExpertRunner runner_;
  SideThread side_;  // queues the runner's work while the CPU experts run
  TraceRecorder* trace_;
  sched::CostModel cost_;
  sched::PolicySpec policy_;
  std::string expert_type_;
  std::unique_ptr<sched::ExpertCache> cache_;
  std::vector<int32_t> staging_;                   // slots for this layer's on-demand copies
  std::vector<int32_t> prefetch_slots_[2];         // slots for the next layer's, by layer parity
  std::vector<std::vector<Prefetch>> prefetched_;  // per layer: copies issued for it
  std::vector<std::vector<int32_t>> predicted_;    // per layer: predicted experts, best first
  std::vector<std::vector<int32_t>> predicted_tokens_;  // per layer and expert: predicted tokens
  std::vector<int32_t> candidates_;                     // issue_prefetches' scratch
  std::vector<double> cpu_after_;
  double pcie_free_at_us_ = 0.0;  // the copy stream's queued work is predicted to end then
  double attention_bytes_ = 0.0, attention_ops_per_token_ = 0.0;  // one layer's, for deadlines
  sched::LayerSituation situation_;
  std::vector<const ExpertTokens*> active_, cpu_groups_, gpu_groups_;
  std::vector<DeviceExpertRunner::Job> gpu_, from_prefetch_;
  std::vector<float> gate_sum_;
  std::vector<int32_t> tokens_of_;  // per expert: this layer's tokens routed to it
  struct PendingCopy {
    Event start, done;
    int32_t tries;
  };
  std::vector<PendingCopy> pending_copies_;
  std::vector<double> shares_;  // observe_shares' predicted time per expert
};

}  // namespace

std::unique_ptr<ExpertExecutor> make_scheduled_expert_executor(const Model& model,
                                                               Accelerator& accelerator,
                                                               uint64_t cache_bytes,
                                                               TraceRecorder* trace,
                                                               const SchedulerSettings& settings) {
  return std::make_unique<ScheduledExpertExecutor>(model, accelerator, cache_bytes, trace,
                                                   settings);
}

}  // namespace tandem
