#include "engine/expert_executor.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>

#include "engine/device_experts.h"
#include "engine/model.h"
#include "engine/trace.h"
#include "gpu/accelerator.h"

namespace tandem {
namespace {

std::string expert_label(int32_t il, const ExpertTokens& g) {
  char label[64];
  std::snprintf(label, sizeof label, "L%d e%d (%zu tok)", il, g.expert, g.token.size());
  return label;
}

class CpuExpertExecutor final : public ExpertExecutor {
 public:
  CpuExpertExecutor(const Model& model, TraceRecorder* trace) : model_(model), trace_(trace) {}

  void run_layer(int32_t il, const Routing& routing, const std::vector<ExpertTokens>& groups,
                 const float* xn, MoeScratch& scratch, CpuArena* arena) override {
    std::vector<const ExpertTokens*>& active = scratch.active;
    active.clear();
    for (const ExpertTokens& g : groups) {
      if (g.token.empty()) continue;
      active.push_back(&g);
      ++stats_.cpu_experts;
      stats_.cpu_tokens += g.token.size();
    }
    char label[48];
    std::snprintf(label, sizeof label, "L%d %zu experts", il, active.size());
    ScopedSpan span(trace_, label, "moe", "cpu experts");
    const auto t0 = std::chrono::steady_clock::now();
    run_experts(model_.spec(), model_.layers()[il], active, routing, xn, scratch, arena);
    stats_.cpu_expert_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }

 private:
  const Model& model_;
  TraceRecorder* trace_;
};

class HybridExpertExecutor final : public ExpertExecutor {
 public:
  HybridExpertExecutor(const Model& model, Accelerator& acc, uint64_t cache_bytes,
                       TraceRecorder* trace)
      : model_(model), slots_(model, acc, cache_bytes), runner_(model, acc, slots_), trace_(trace) {
    slots_.fill_in_expert_order();
  }

  void run_layer(int32_t il, const Routing& routing, const std::vector<ExpertTokens>& groups,
                 const float* xn, MoeScratch& scratch, CpuArena* arena) override {
    const ModelSpec& s = model_.spec();
    // The static plan: resident experts on the accelerator, the others on the CPU.
    gpu_.clear();
    cpu_groups_.clear();
    for (const ExpertTokens& g : groups) {
      if (g.token.empty()) continue;
      const int32_t slot = slots_.slot_of(il, g.expert);
      if (slot >= 0) {
        gpu_.push_back({&g, slot});
      } else {
        cpu_groups_.push_back(&g);
      }
    }
    if (!gpu_.empty()) runner_.enqueue(gpu_, xn);
    const LayerWeights& w = model_.layers()[il];
    const auto t0 = std::chrono::steady_clock::now();
    for (const ExpertTokens* g : cpu_groups_) {
      ScopedSpan span(trace_, expert_label(il, *g), "moe", "cpu experts");
      run_expert(s, w, *g, routing, xn, scratch, arena);
      ++stats_.cpu_experts;
      stats_.cpu_tokens += g->token.size();
    }
    stats_.cpu_expert_seconds +=
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (gpu_.empty()) return;
    runner_.finish(gpu_, routing, scratch.slot_out.data());
    for (const DeviceExpertRunner::Job& j : gpu_) {
      ++stats_.gpu_experts;
      ++stats_.cache_hits;  // this executor only runs resident experts there
      stats_.gpu_tokens += j.group->token.size();
    }
  }

 private:
  const Model& model_;
  DeviceExpertSlots slots_;
  DeviceExpertRunner runner_;
  TraceRecorder* trace_;
  std::vector<DeviceExpertRunner::Job> gpu_;
  std::vector<const ExpertTokens*> cpu_groups_;
};

}  // namespace

std::unique_ptr<ExpertExecutor> make_cpu_expert_executor(const Model& model, TraceRecorder* trace) {
  return std::make_unique<CpuExpertExecutor>(model, trace);
}

std::unique_ptr<ExpertExecutor> make_hybrid_expert_executor(const Model& model,
                                                            Accelerator& accelerator,
                                                            uint64_t cache_bytes,
                                                            TraceRecorder* trace) {
  return std::make_unique<HybridExpertExecutor>(model, accelerator, cache_bytes, trace);
}

}  // namespace tandem
