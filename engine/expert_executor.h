// Runs the activated experts of one MoE layer. The CPU executor runs them all on the CPU; the
// hybrid executor follows a plan that puts some on an accelerator (experts resident in its
// memory) and runs the rest on the CPU at the same time. The forward pass only sees this
// interface: placement is data, not branches in model code.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "engine/moe.h"

namespace tandem {

class Accelerator;
class CpuArena;
class Model;
class TraceRecorder;

// Where one step's experts ran, summed over layers.
struct ExpertRunStats {
  uint64_t cpu_experts = 0, gpu_experts = 0;
  uint64_t cpu_tokens = 0, gpu_tokens = 0;
  uint64_t cache_hits = 0;      // accelerator experts that were already resident
  // Time in expert work, by device: the CPU's on the host clock (each layer's CPU experts as a
  // batch), the accelerator's from its own clock around each FFN (scheduled policies only).
  double cpu_expert_seconds = 0.0, gpu_expert_seconds = 0.0;
  uint64_t copied_experts = 0;  // experts copied to the accelerator (cache admissions, staging)
  uint64_t copied_bytes = 0;
  // Prefetch of the next layer's experts (policies that prefetch, with an accelerator).
  uint64_t prefetched_experts = 0;  // copies issued for a predicted expert
  uint64_t prefetch_hits = 0;       // prefetched experts the layer then ran on the accelerator
  uint64_t predicted_experts = 0;   // activated experts of layers that had a prediction
  uint64_t predicted_correct = 0;   // of those, named by the prediction
  uint64_t predicted_wrong = 0;     // predicted experts the layer did not use
  uint64_t predicted_wrong_cached = 0;  // of those, resident in the cache anyway
  // Expected predicted_wrong_cached had each wrong guess been a uniformly random unused expert.
  double predicted_wrong_cached_if_uniform = 0.0;
  // The scheduler's cost model against measured times (scheduled policies): CPU experts timed
  // on the host clock, accelerator experts and copies on the device's (Accelerator::elapsed_us).
  uint64_t cost_observations = 0;  // CPU expert runs timed and fed back (online refit)
  double cpu_cost_error = 0.0;     // moving average of |predicted - measured| / measured
  uint64_t gpu_cost_observations = 0;   // accelerator expert runs timed and fed back
  double gpu_cost_error = 0.0;          // the same moving average for them
  uint64_t copy_cost_observations = 0;  // expert copies timed and fed back
  double copy_cost_error = 0.0;
};

class ExpertExecutor {
 public:
  virtual ~ExpertExecutor() = default;
  // Fills scratch.slot_out for every routed (token, slot) of layer `il`.
  virtual void run_layer(int32_t il, const Routing& routing,
                         const std::vector<ExpertTokens>& groups, const float* xn,
                         MoeScratch& scratch, CpuArena* arena) = 0;
  // Whether run_layer uses predictions of the next layer's experts (see predict).
  virtual bool wants_prediction() const { return false; }
  // Layer `il`'s routing as predicted from the hidden state before layer il - 1's experts;
  // given before run_layer(il - 1), whose copies it may then extend with prefetches.
  virtual void predict(int32_t /*il*/, const Routing& /*predicted*/) {}
  const ExpertRunStats& stats() const { return stats_; }
  // Experts of `layer` the accelerator's cache holds now (0 without a cache).
  virtual int32_t cached_experts(int32_t /*layer*/) const { return 0; }

 protected:
  ExpertRunStats stats_;
};

std::unique_ptr<ExpertExecutor> make_cpu_expert_executor(const Model& model, TraceRecorder* trace);

// Caches as many experts as `cache_bytes` holds in the accelerator's memory (expert-id order,
// the same fraction of every layer) and runs those there; the rest run on the CPU meanwhile.
std::unique_ptr<ExpertExecutor> make_hybrid_expert_executor(const Model& model,
                                                            Accelerator& accelerator,
                                                            uint64_t cache_bytes,
                                                            TraceRecorder* trace);

// The scheduler's choices for the hybrid executor.
struct SchedulerSettings {
  // tandem | hybrimoe | fiddler | static | cpu-experts (scheduler/replay.h's policies).
  std::string policy = "tandem";
  std::string hardware_profile;     // cost model source; empty: the default profile
  std::vector<int32_t> pin_layers;  // layers whose experts stay resident (tandem)
  // Cache ranking of the tandem policy: next-use (default), score, lru or lfu
  // (scheduler/expert_cache.h); the other policies keep their own.
  std::string eviction = "next-use";
};

// Places each layer's activated experts with the policy's planner (CPU, cached on the
// accelerator, or copied there first), keeps the cache with the policy's admission rule, and
// overlaps copies, accelerator work and CPU experts. Throws std::invalid_argument naming an
// unknown policy.
std::unique_ptr<ExpertExecutor> make_scheduled_expert_executor(const Model& model,
                                                               Accelerator& accelerator,
                                                               uint64_t cache_bytes,
                                                               TraceRecorder* trace,
                                                               const SchedulerSettings& settings);

}  // namespace tandem
