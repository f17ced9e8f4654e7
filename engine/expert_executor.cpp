#include "engine/expert_executor.h"

#include <algorithm>
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
    run_experts(model_.spec(), model_.layers()[il], active, routing, xn, scratch, arena);
  }

 private:
  const Model& model_;
  TraceRecorder* trace_;
};

class HybridExpertExecutor final : public ExpertExecutor {
 public:
  HybridExpertExecutor(const Model& model, Accelerator& acc, uint64_t cache_bytes, TraceRecorder* trace)
      : model_(model), acc_(acc), slots_(model, acc, cache_bytes), trace_(trace) {
    slots_.fill_in_expert_order();
  }

  ~HybridExpertExecutor() override {
    acc_.synchronize(Stream::Compute);
    for (DeviceBuffer* b : {&x_, &scratch_, &out_}) {
      if (*b) acc_.release(*b);
    }
  }

  void run_layer(int32_t il, const Routing& routing, const std::vector<ExpertTokens>& groups,
                 const float* xn, MoeScratch& scratch, CpuArena* arena) override {
    const ModelSpec& s = model_.spec();
    // The static plan: resident experts on the accelerator, the others on the CPU.
    gpu_groups_.clear();
    cpu_groups_.clear();
    int64_t gpu_rows = 0, max_rows = 0;
    for (const ExpertTokens& g : groups) {
      if (g.token.empty()) continue;
      if (slots_.slot_of(il, g.expert) >= 0) {
        gpu_groups_.push_back(&g);
        gpu_rows += static_cast<int64_t>(g.token.size());
        max_rows = std::max<int64_t>(max_rows, static_cast<int64_t>(g.token.size()));
      } else {
        cpu_groups_.push_back(&g);
      }
    }
    if (!gpu_groups_.empty()) enqueue_gpu(il, xn, gpu_rows, max_rows);
    const LayerWeights& w = model_.layers()[il];
    for (const ExpertTokens* g : cpu_groups_) {
      ScopedSpan span(trace_, expert_label(il, *g), "moe", "cpu experts");
      run_expert(s, w, *g, routing, xn, scratch, arena);
      ++stats_.cpu_experts;
      stats_.cpu_tokens += g->token.size();
    }
    if (gpu_groups_.empty()) return;
    acc_.synchronize(Stream::Compute);
    int64_t offset = 0;
    for (const ExpertTokens* g : gpu_groups_) {
      scatter_weighted(*g, routing, staging_out_.data() + offset * s.n_embd, s.n_embd, scratch.slot_out.data());
      offset += static_cast<int64_t>(g->token.size());
      ++stats_.gpu_experts;
      ++stats_.cache_hits;  // this executor only runs resident experts there
      stats_.gpu_tokens += g->token.size();
    }
  }

 private:
  // Queues, per resident expert: its input rows in, the FFN, its output rows out. One set of
  // device buffers serves every expert: the compute stream runs them in order.
  void enqueue_gpu(int32_t il, const float* xn, int64_t total_rows, int64_t max_rows) {
    const ModelSpec& s = model_.spec();
    ensure_capacity(max_rows);
    staging_in_.resize(static_cast<size_t>(total_rows) * s.n_embd);
    staging_out_.resize(static_cast<size_t>(total_rows) * s.n_embd);
    int64_t offset = 0;
    for (const ExpertTokens* g : gpu_groups_) {
      gather_rows(*g, xn, s.n_embd, staging_in_.data() + offset * s.n_embd);
      offset += static_cast<int64_t>(g->token.size());
    }
    offset = 0;
    for (const ExpertTokens* g : gpu_groups_) {
      const int64_t m = static_cast<int64_t>(g->token.size());
      const uint64_t bytes = static_cast<uint64_t>(m) * s.n_embd * sizeof(float);
      acc_.copy_to_device(Stream::Compute, x_, 0, staging_in_.data() + offset * s.n_embd, bytes);
      acc_.expert_ffn(slots_.device_expert(slots_.slot_of(il, g->expert)), x_, m, scratch_, out_);
      acc_.copy_to_host(Stream::Compute, staging_out_.data() + offset * s.n_embd, out_, 0, bytes);
      offset += m;
    }
  }

  void ensure_capacity(int64_t rows) {
    if (rows <= capacity_rows_) return;
    acc_.synchronize(Stream::Compute);
    for (DeviceBuffer* b : {&x_, &scratch_, &out_}) {
      if (*b) acc_.release(*b);
      *b = DeviceBuffer{};
    }
    const ModelSpec& s = model_.spec();
    x_ = acc_.allocate(static_cast<uint64_t>(rows) * s.n_embd * sizeof(float));
    scratch_ = acc_.allocate(static_cast<uint64_t>(rows) * s.n_ff_expert * 2 * sizeof(float));
    out_ = acc_.allocate(static_cast<uint64_t>(rows) * s.n_embd * sizeof(float));
    capacity_rows_ = rows;
  }

  const Model& model_;
  Accelerator& acc_;
  DeviceExpertSlots slots_;
  TraceRecorder* trace_;
  DeviceBuffer x_, scratch_, out_;
  int64_t capacity_rows_ = 0;
  std::vector<float> staging_in_, staging_out_;
  std::vector<const ExpertTokens*> gpu_groups_, cpu_groups_;
};

}  // namespace

std::unique_ptr<ExpertExecutor> make_cpu_expert_executor(const Model& model, TraceRecorder* trace) {
  return std::make_unique<CpuExpertExecutor>(model, trace);
}

std::unique_ptr<ExpertExecutor> make_hybrid_expert_executor(const Model& model, Accelerator& accelerator,
                                                            uint64_t cache_bytes, TraceRecorder* trace) {
  return std::make_unique<HybridExpertExecutor>(model, accelerator, cache_bytes, trace);
}

}  // namespace tandem
