#include "scheduler/planner.h"

#include <algorithm>
#include <limits>
#include <numeric>
#include <stdexcept>

namespace tandem::sched {
namespace {

// The jobs in the GPU side's processing order. Restricting this order to any subset gives that
// subset's optimal order (resident first, in-flight by arrival, copies by Johnson's rule), so
// one sort serves every assignment the search looks at.
struct Ordered {
  std::vector<int32_t> order;         // job indices
  std::vector<uint8_t> same_as_prev;  // job equal to the previous one in every cost field

  explicit Ordered(const LayerSituation& s) {
    const auto& jobs = s.jobs;
    order.resize(jobs.size());
    std::iota(order.begin(), order.end(), 0);
    auto rank = [&](const ExpertJob& j) {
      if (j.residency == Residency::Resident) return 0;
      if (j.residency == Residency::InFlight) return 1;
      return j.copy_us < j.gpu_us ? 2 : 3;  // Johnson: first set, then second set
    };
    std::stable_sort(order.begin(), order.end(), [&](int32_t ia, int32_t ib) {
      const ExpertJob& a = jobs[ia];
      const ExpertJob& b = jobs[ib];
      const int ra = rank(a), rb = rank(b);
      if (ra != rb) return ra < rb;
      if (ra == 1 && a.ready_us != b.ready_us) return a.ready_us < b.ready_us;
      if (ra == 2 && a.copy_us != b.copy_us) return a.copy_us < b.copy_us;
      if (ra == 3 && a.gpu_us != b.gpu_us) return a.gpu_us > b.gpu_us;
      // Equal keys: group identical jobs so the search can skip their permutations.
      if (a.cpu_us != b.cpu_us) return a.cpu_us < b.cpu_us;
      if (a.gpu_us != b.gpu_us) return a.gpu_us < b.gpu_us;
      return a.copy_us < b.copy_us;
    });
    same_as_prev.assign(jobs.size(), 0);
    for (size_t k = 1; k < order.size(); ++k) {
      const ExpertJob& a = jobs[order[k - 1]];
      const ExpertJob& b = jobs[order[k]];
      same_as_prev[k] = a.residency == b.residency && a.cpu_us == b.cpu_us &&
                        a.gpu_us == b.gpu_us && a.copy_us == b.copy_us && a.ready_us == b.ready_us;
    }
  }
};

// Running state of the three resources.
struct Clock {
  double cpu, gpu, pcie;
  double penalty = 0.0;
};

inline void run_on_gpu(const ExpertJob& j, double penalty, Clock& c) {
  switch (j.residency) {
    case Residency::Resident:
      c.gpu += j.gpu_us;
      break;
    case Residency::InFlight:
      c.gpu = std::max(c.gpu, j.ready_us) + j.gpu_us;
      break;
    case Residency::Absent:
      c.pcie += j.copy_us;
      c.gpu = std::max(c.gpu, c.pcie) + j.gpu_us;
      c.penalty += penalty;
      break;
  }
}

double evaluate_ordered(const LayerSituation& s, const Ordered& o, const std::vector<uint8_t>& g) {
  Clock c{s.cpu_free_us, s.gpu_free_us, s.pcie_free_us};
  for (int32_t i : o.order) {
    if (g[i]) {
      run_on_gpu(s.jobs[i], s.copy_penalty_us, c);
    } else {
      c.cpu += s.jobs[i].cpu_us;
    }
  }
  return std::max(c.cpu, c.gpu) + c.penalty;
}

LayerPlan make_plan(const LayerSituation& s, const Ordered& o, const std::vector<uint8_t>& g,
                    bool exact) {
  LayerPlan p;
  Clock c{s.cpu_free_us, s.gpu_free_us, s.pcie_free_us};
  p.placement.assign(s.jobs.size(), Placement::Cpu);
  for (int32_t i : o.order) {
    const ExpertJob& j = s.jobs[i];
    if (!g[i]) {
      c.cpu += j.cpu_us;
      continue;
    }
    run_on_gpu(j, s.copy_penalty_us, c);
    if (j.residency == Residency::Absent) {
      p.placement[i] = Placement::CopyThenGpu;
      p.copy_order.push_back(i);
    } else {
      p.placement[i] = Placement::GpuCached;
    }
  }
  p.cpu_finish_us = c.cpu;
  p.gpu_finish_us = c.gpu;
  p.pcie_finish_us = c.pcie;
  p.makespan_us = std::max(c.cpu, c.gpu);
  p.objective_us = p.makespan_us + c.penalty;
  p.exact = exact;
  return p;
}

// Depth-first branch and bound over the jobs in GPU order.
class BranchAndBound {
 public:
  BranchAndBound(const LayerSituation& s, const Ordered& o, double incumbent,
                 std::vector<uint8_t> incumbent_mask)
      : s_(s), o_(o), best_(incumbent), best_mask_(std::move(incumbent_mask)) {
    const size_t n = o.order.size();
    suffix_min_.assign(n + 1, 0.0);
    for (size_t k = n; k-- > 0;) {
      const ExpertJob& j = s.jobs[o.order[k]];
      suffix_min_[k] = suffix_min_[k + 1] + std::min(j.cpu_us, j.gpu_us);
    }
    mask_.assign(n, 0);
  }

  void run() { dfs(0, Clock{s_.cpu_free_us, s_.gpu_free_us, s_.pcie_free_us}, true); }
  double best() const { return best_; }
  const std::vector<uint8_t>& best_mask() const { return best_mask_; }

 private:
  void dfs(size_t k, Clock c, bool prev_on_gpu) {
    if (k == o_.order.size()) {
      const double v = std::max(c.cpu, c.gpu) + c.penalty;
      if (v < best_) best_ = v, best_mask_ = mask_;
      return;
    }
    // Each remaining job adds at least min(cpu, gpu) time to one of the two sides.
    const double lb = std::max({c.cpu, c.gpu, 0.5 * (c.cpu + c.gpu + suffix_min_[k])}) + c.penalty;
    if (lb >= best_) return;
    const int32_t i = o_.order[k];
    const ExpertJob& j = s_.jobs[i];
    // Identical neighbours are interchangeable: only GPU...GPU CPU...CPU patterns are tried.
    const bool gpu_allowed = !(o_.same_as_prev[k] && !prev_on_gpu);
    Clock on_gpu = c;
    run_on_gpu(j, s_.copy_penalty_us, on_gpu);
    Clock on_cpu = c;
    on_cpu.cpu += j.cpu_us;
    const bool gpu_first = std::max(on_gpu.cpu, on_gpu.gpu) + on_gpu.penalty <=
                           std::max(on_cpu.cpu, on_cpu.gpu) + on_cpu.penalty;
    for (int pass = 0; pass < 2; ++pass) {
      const bool try_gpu = (pass == 0) == gpu_first;
      if (try_gpu && !gpu_allowed) continue;
      mask_[i] = try_gpu;
      dfs(k + 1, try_gpu ? on_gpu : on_cpu, try_gpu);
    }
    mask_[i] = 0;
  }

  const LayerSituation& s_;
  const Ordered& o_;
  double best_;
  std::vector<uint8_t> best_mask_;
  std::vector<uint8_t> mask_;
  std::vector<double> suffix_min_;
};

// The sorted greedy: the k jobs that gain most from the GPU go there, best k kept, then single
// moves while they shorten the makespan.
std::vector<uint8_t> greedy_mask(const LayerSituation& s, const Ordered& o, double* value) {
  const size_t n = s.jobs.size();
  std::vector<double> gain(n);
  for (size_t i = 0; i < n; ++i) {
    const ExpertJob& j = s.jobs[i];
    // Pipeline throughput of a copied job is bounded by the slower of its two stages.
    const double gpu_cost =
        j.residency == Residency::Absent ? std::max(j.gpu_us, j.copy_us) : j.gpu_us;
    gain[i] = j.cpu_us / std::max(gpu_cost, 1e-9);
  }
  std::vector<int32_t> by_gain(n);
  std::iota(by_gain.begin(), by_gain.end(), 0);
  std::stable_sort(by_gain.begin(), by_gain.end(),
                   [&](int32_t a, int32_t b) { return gain[a] > gain[b]; });
  std::vector<uint8_t> mask(n, 0), best_mask(n, 0);
  double best = evaluate_ordered(s, o, mask);
  for (size_t k = 0; k < n; ++k) {
    mask[by_gain[k]] = 1;
    const double v = evaluate_ordered(s, o, mask);
    if (v < best) best = v, best_mask = mask;
  }
  for (int pass = 0; pass < 3; ++pass) {
    bool improved = false;
    for (int32_t i : by_gain) {
      best_mask[i] ^= 1;
      const double v = evaluate_ordered(s, o, best_mask);
      if (v < best - 1e-12) {
        best = v;
        improved = true;
      } else {
        best_mask[i] ^= 1;
      }
    }
    if (!improved) break;
  }
  *value = best;
  return best_mask;
}

}  // namespace

const char* placement_name(Placement p) {
  switch (p) {
    case Placement::Cpu:
      return "cpu";
    case Placement::GpuCached:
      return "gpu";
    case Placement::CopyThenGpu:
      return "copy+gpu";
  }
  return "?";
}

double evaluate_assignment(const LayerSituation& s, const std::vector<uint8_t>& on_gpu,
                           LayerPlan* plan) {
  if (on_gpu.size() != s.jobs.size()) {
    throw std::invalid_argument("evaluate_assignment: assignment has " +
                                std::to_string(on_gpu.size()) + " entries for " +
                                std::to_string(s.jobs.size()) + " jobs");
  }
  const Ordered o(s);
  if (plan) *plan = make_plan(s, o, on_gpu, false);
  return evaluate_ordered(s, o, on_gpu);
}

LayerPlan plan_greedy(const LayerSituation& s) {
  const Ordered o(s);
  double v = 0;
  const std::vector<uint8_t> mask = greedy_mask(s, o, &v);
  return make_plan(s, o, mask, false);
}

LayerPlan plan_exact(const LayerSituation& s) {
  const Ordered o(s);
  double v = 0;
  std::vector<uint8_t> start = greedy_mask(s, o, &v);
  BranchAndBound bb(s, o, v, std::move(start));
  bb.run();
  return make_plan(s, o, bb.best_mask(), true);
}

LayerPlan plan_makespan(const LayerSituation& s, int exact_limit) {
  return static_cast<int>(s.jobs.size()) <= exact_limit ? plan_exact(s) : plan_greedy(s);
}

LayerPlan plan_brute_force(const LayerSituation& s) {
  const size_t n = s.jobs.size();
  if (n > 20)
    throw std::invalid_argument("plan_brute_force: too many jobs (" + std::to_string(n) + ")");
  const Ordered o(s);
  std::vector<uint8_t> mask(n, 0), best_mask(n, 0);
  double best = std::numeric_limits<double>::infinity();
  for (uint32_t bits = 0; bits < (1u << n); ++bits) {
    for (size_t i = 0; i < n; ++i) mask[i] = (bits >> i) & 1u;
    const double v = evaluate_ordered(s, o, mask);
    if (v < best) best = v, best_mask = mask;
  }
  return make_plan(s, o, best_mask, true);
}

}  // namespace tandem::sched
