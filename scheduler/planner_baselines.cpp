// The policies Tandem is compared with, each as its paper or tool describes it, behind the
// same Planner interface. They decide with their own rules; the makespan they get is always
// computed with the true costs of the situation (what would really happen).
#include <algorithm>
#include <deque>
#include <numeric>

#include "scheduler/planner.h"

namespace tandem::sched {
namespace {

std::vector<uint8_t> resident_mask(const LayerSituation& s) {
  std::vector<uint8_t> m(s.jobs.size(), 0);
  for (size_t i = 0; i < s.jobs.size(); ++i) m[i] = s.jobs[i].residency != Residency::Absent;
  return m;
}

// llama.cpp's op offload: an expert matmul whose weights live in host memory runs on the GPU
// when the step has at least `min_batch` tokens, after the whole weight tensor (every expert
// of the layer) is copied; the copy and the compute are not overlapped.
LayerPlan whole_layer_offload(const LayerSituation& s) {
  LayerPlan p;
  p.placement.assign(s.jobs.size(), Placement::CopyThenGpu);
  double gpu_work = 0;
  for (size_t i = 0; i < s.jobs.size(); ++i) {
    gpu_work += s.jobs[i].gpu_us;
    if (s.jobs[i].residency != Residency::Absent) p.placement[i] = Placement::GpuCached;
  }
  const double copy_start = std::max(s.gpu_free_us, s.pcie_free_us);
  p.pcie_finish_us = copy_start + s.whole_layer_copy_us;
  p.gpu_finish_us = p.pcie_finish_us + gpu_work;
  p.cpu_finish_us = s.cpu_free_us;
  p.makespan_us = std::max(p.gpu_finish_us, p.cpu_finish_us);
  p.extra_copy_bytes_factor = 1.0;
  return p;
}

bool offloads(const LayerSituation& s, int32_t min_batch) {
  if (s.n_batch_tokens < min_batch || s.whole_layer_copy_us <= 0.0) return false;
  for (const ExpertJob& j : s.jobs) {
    if (j.residency == Residency::Absent) return true;
  }
  return false;
}

class CpuOnlyPlanner final : public Planner {
 public:
  explicit CpuOnlyPlanner(int32_t min_batch) : min_batch_(min_batch) {}
  std::string name() const override { return "cpu-experts"; }
  LayerPlan plan(const LayerSituation& s) const override {
    LayerSituation all_absent = s;
    for (ExpertJob& j : all_absent.jobs) j.residency = Residency::Absent;
    if (offloads(all_absent, min_batch_)) return whole_layer_offload(all_absent);
    LayerPlan p;
    evaluate_assignment(s, std::vector<uint8_t>(s.jobs.size(), 0), &p);
    return p;
  }

 private:
  int32_t min_batch_;
};

class StaticPlanner final : public Planner {
 public:
  explicit StaticPlanner(int32_t min_batch) : min_batch_(min_batch) {}
  std::string name() const override { return "static"; }
  LayerPlan plan(const LayerSituation& s) const override {
    if (offloads(s, min_batch_)) return whole_layer_offload(s);
    LayerPlan p;
    evaluate_assignment(s, resident_mask(s), &p);
    return p;
  }

 private:
  int32_t min_batch_;
};

class FiddlerPlanner final : public Planner {
 public:
  std::string name() const override { return "fiddler"; }
  LayerPlan plan(const LayerSituation& s) const override {
    std::vector<uint8_t> m = resident_mask(s);
    for (size_t i = 0; i < s.jobs.size(); ++i) {
      const ExpertJob& j = s.jobs[i];
      // Each expert alone: the lower of its two latencies, ignoring the others' load.
      if (j.residency == Residency::Absent) m[i] = j.copy_us + j.gpu_us < j.cpu_us;
    }
    LayerPlan p;
    evaluate_assignment(s, m, &p);
    return p;
  }
};

class HybriMoePlanner final : public Planner {
 public:
  HybriMoePlanner(LinearCost cpu, LinearCost gpu, double copy_us)
      : cpu_(cpu), gpu_(gpu), copy_us_(copy_us) {}
  std::string name() const override { return "hybrimoe"; }
  LayerPlan plan(const LayerSituation& s) const override;

 private:
  LinearCost cpu_, gpu_;
  double copy_us_;
};

LayerPlan HybriMoePlanner::plan(const LayerSituation& s) const {
  std::deque<int32_t> cached, uncached;
  for (size_t i = 0; i < s.jobs.size(); ++i) {
    (s.jobs[i].residency == Residency::Absent ? uncached : cached)
        .push_back(static_cast<int32_t>(i));
  }
  auto by_load = [&](int32_t a, int32_t b) { return s.jobs[a].n_tokens > s.jobs[b].n_tokens; };
  std::sort(cached.begin(), cached.end(), by_load);      // GPU takes the heaviest first
  std::sort(uncached.begin(), uncached.end(), by_load);  // CPU from the back (light)
  std::vector<uint8_t> m(s.jobs.size(), 0);
  double t_cpu = s.cpu_free_us, t_gpu = s.gpu_free_us, t_pcie = s.pcie_free_us;
  while (!cached.empty() || !uncached.empty()) {
    // Candidates at the two ends: the GPU's next is cached-heavy, else uncached-heavy; the
    // CPU's next is uncached-light, else cached-light.
    const bool gpu_from_cache = !cached.empty();
    const int32_t g = gpu_from_cache ? cached.front() : uncached.front();
    const bool cpu_from_uncached = !uncached.empty();
    const int32_t c = cpu_from_uncached ? uncached.back() : cached.back();
    const ExpertJob& gj = s.jobs[g];
    double gpu_start = t_gpu;
    double pcie_after = t_pcie;
    if (!gpu_from_cache) {
      pcie_after = t_pcie + copy_us_;
      gpu_start = std::max(t_gpu, pcie_after);
    } else if (gj.residency == Residency::InFlight) {
      gpu_start = std::max(t_gpu, gj.ready_us);
    }
    const double gpu_finish = gpu_start + gpu_.at(gj.n_tokens);
    const double cpu_finish = t_cpu + cpu_.at(s.jobs[c].n_tokens);
    if (cpu_finish <= gpu_finish) {
      t_cpu = cpu_finish;
      cpu_from_uncached ? uncached.pop_back() : cached.pop_back();
    } else {
      t_gpu = gpu_finish;
      t_pcie = pcie_after;
      m[g] = 1;
      gpu_from_cache ? cached.pop_front() : uncached.pop_front();
    }
  }
  LayerPlan p;
  evaluate_assignment(s, m, &p);
  return p;
}

class TandemPlanner final : public Planner {
 public:
  explicit TandemPlanner(int exact_limit) : exact_limit_(exact_limit) {}
  std::string name() const override { return "tandem"; }
  LayerPlan plan(const LayerSituation& s) const override { return plan_makespan(s, exact_limit_); }

 private:
  int exact_limit_;
};

}  // namespace

std::unique_ptr<Planner> make_cpu_only_planner(int32_t offload_min_batch) {
  return std::make_unique<CpuOnlyPlanner>(offload_min_batch);
}
std::unique_ptr<Planner> make_static_planner(int32_t offload_min_batch) {
  return std::make_unique<StaticPlanner>(offload_min_batch);
}
std::unique_ptr<Planner> make_fiddler_planner() {
  return std::make_unique<FiddlerPlanner>();
}
std::unique_ptr<Planner> make_hybrimoe_planner(LinearCost cpu, LinearCost gpu, double copy_us) {
  return std::make_unique<HybriMoePlanner>(cpu, gpu, copy_us);
}
std::unique_ptr<Planner> make_tandem_planner(int exact_limit) {
  return std::make_unique<TandemPlanner>(exact_limit);
}

}  // namespace tandem::sched
