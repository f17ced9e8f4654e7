// The per-layer split: for each activated expert, run it on the CPU, on the GPU from the cache,
// or copy it over PCIe and run it on the GPU, so that the layer finishes soonest. Three
// resources overlap: the CPU (runs its experts one after another, each over all cores), the
// GPU (one compute stream) and one serial PCIe channel; a copied expert's GPU compute starts
// after its copy lands. The layer's makespan is max(CPU finish, GPU finish).
//
// For a fixed CPU/GPU assignment the GPU side is a two-machine flow shop (PCIe, then GPU):
// resident experts first, in-flight ones by arrival, then copies in Johnson's order, which is
// optimal for that sub-problem. The planner searches the assignments: exactly (branch and
// bound) up to kExactLimit experts, by a sorted greedy with local improvement beyond.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace tandem::sched {

enum class Residency : uint8_t { Absent, Resident, InFlight };
enum class Placement : uint8_t { Cpu, GpuCached, CopyThenGpu };
const char* placement_name(Placement p);

// One activated expert of the layer with its predicted times.
struct ExpertJob {
  int32_t expert = -1;
  int32_t n_tokens = 0;
  float gate_sum = 0.0f;  // sum of its gate weights over the tokens routed to it
  Residency residency = Residency::Absent;
  double cpu_us = 0.0;    // compute on the CPU
  double gpu_us = 0.0;    // compute on the GPU
  double copy_us = 0.0;   // PCIe transfer (Absent only)
  double ready_us = 0.0;  // InFlight only: when its copy lands, from the layer start
};

// Everything the planner needs for one layer; times are relative to the layer's start.
struct LayerSituation {
  std::vector<ExpertJob> jobs;
  double cpu_free_us = 0.0;          // CPU busy until then (e.g. attention on the CPU)
  double gpu_free_us = 0.0;          // GPU busy until then (attention, shared expert)
  double pcie_free_us = 0.0;         // copies already queued (prefetches) end then
  int32_t n_batch_tokens = 0;        // tokens in this step (for threshold policies)
  double whole_layer_copy_us = 0.0;  // copy of all the layer's experts (llama.cpp offload)
  // Price of the PCIe time a copy takes from later prefetches, added to the objective per
  // copied expert (0: pure makespan).
  double copy_penalty_us = 0.0;
};

struct LayerPlan {
  std::vector<Placement> placement;  // per job, same order as LayerSituation::jobs
  std::vector<int32_t> copy_order;   // job indices in PCIe order
  double makespan_us = 0.0;
  double objective_us = 0.0;  // makespan + copy penalties: what the search minimised
  double cpu_finish_us = 0.0;
  double gpu_finish_us = 0.0;
  double pcie_finish_us = 0.0;
  double extra_copy_bytes_factor = 0.0;  // whole-layer copies (llama.cpp offload), in layers
  bool exact = false;
};

inline constexpr int kExactLimit = 12;

// Objective of an assignment (on_gpu[i]: job i runs on the GPU): its makespan with the GPU side
// in its optimal order, plus the copy penalties; fills `plan` when given.
double evaluate_assignment(const LayerSituation& s, const std::vector<uint8_t>& on_gpu,
                           LayerPlan* plan = nullptr);
// Optimal assignment by branch and bound (any size; exponential worst case).
LayerPlan plan_exact(const LayerSituation& s);
// Sorted greedy plus single-move local improvement, O(n^2) evaluations of O(n).
LayerPlan plan_greedy(const LayerSituation& s);
// Exact up to `exact_limit` jobs, greedy beyond.
LayerPlan plan_makespan(const LayerSituation& s, int exact_limit = kExactLimit);
// Every assignment enumerated (tests; at most 20 jobs).
LayerPlan plan_brute_force(const LayerSituation& s);

// Linear cost estimates (time = a + b * tokens) some baselines plan with.
struct LinearCost {
  double a = 0.0;
  double b = 0.0;
  double at(double n) const { return a + b * n; }
};

// A planning policy: one interface for Tandem and the baselines it is compared with.
class Planner {
 public:
  virtual ~Planner() = default;
  virtual std::string name() const = 0;
  virtual LayerPlan plan(const LayerSituation& s) const = 0;
};

// Every expert on the CPU (llama.cpp --cpu-moe). From `offload_min_batch` tokens per step on,
// llama.cpp copies the whole layer's expert tensors to the GPU and runs them there.
std::unique_ptr<Planner> make_cpu_only_planner(int32_t offload_min_batch = 32);
// Resident experts on the GPU, the rest on the CPU, never a per-expert copy (llama.cpp
// --n-cpu-moe / -ot; KTransformers GPU experts), with the same whole-layer prefill offload.
std::unique_ptr<Planner> make_static_planner(int32_t offload_min_batch = 32);
// Fiddler: per expert, the CPU when its latency beats copy + GPU, else copy; resident on GPU.
std::unique_ptr<Planner> make_fiddler_planner();
// HybriMoE: two-ended greedy; CPU takes light uncached experts, GPU cached then heavy uncached
// ones, the device that would finish first takes its next expert; costs from linear estimates.
std::unique_ptr<Planner> make_hybrimoe_planner(LinearCost cpu, LinearCost gpu, double copy_us);
// Tandem: exact / greedy makespan minimisation on the calibrated cost model.
std::unique_ptr<Planner> make_tandem_planner(int exact_limit = kExactLimit);

}  // namespace tandem::sched
