// The split planner against brute force: exact mode must find the optimum of every random layer
// situation; the greedy's mean excess over the optimum is printed and must stay under 5%.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>

#include "scheduler/planner.h"

namespace tandem::sched {
namespace {

// A random cost model: bandwidth-bound fixed cost and per-token slope per device, random copy
// bandwidth, random expert loads and cache states.
LayerSituation random_situation(std::mt19937_64& rng, int n_jobs) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  auto log_uniform = [&](double lo, double hi) { return lo * std::pow(hi / lo, u(rng)); };
  const double cpu_fixed = log_uniform(20, 400), cpu_tok = log_uniform(1, 50);
  const double gpu_fixed = log_uniform(2, 40), gpu_tok = log_uniform(0.01, 2);
  const double copy = log_uniform(20, 1000);
  const double p_resident = u(rng) * 0.8;
  LayerSituation s;
  s.cpu_free_us = u(rng) < 0.5 ? 0.0 : log_uniform(1, 100);
  s.gpu_free_us = log_uniform(1, 200);
  s.pcie_free_us = u(rng) < 0.5 ? 0.0 : log_uniform(1, 500);
  const int max_tokens = u(rng) < 0.5 ? 1 : 1 + static_cast<int>(log_uniform(1, 512));
  for (int i = 0; i < n_jobs; ++i) {
    ExpertJob j;
    j.expert = i;
    j.n_tokens = 1 + static_cast<int>(u(rng) * max_tokens);
    j.cpu_us = std::max(cpu_fixed * (0.9 + 0.2 * u(rng)), cpu_tok * j.n_tokens) + 3.0;
    j.gpu_us = std::max(gpu_fixed, gpu_tok * j.n_tokens) + 5.0;
    j.copy_us = copy * (u(rng) < 0.8 ? 1.0 : 0.5 + u(rng));
    const double r = u(rng);
    if (r < p_resident) {
      j.residency = Residency::Resident;
    } else if (r < p_resident + 0.1) {
      j.residency = Residency::InFlight;
      j.ready_us = u(rng) * s.pcie_free_us;  // landed copies end before the channel frees
    }
    s.jobs.push_back(j);
  }
  return s;
}

TEST(PlannerOptimality, ExactEqualsBruteForceAndGreedyIsClose) {
  std::mt19937_64 rng(20240611);
  constexpr int kSituations = 10000;
  double excess_sum = 0.0, excess_max = 0.0;
  int n_greedy_optimal = 0;
  for (int t = 0; t < kSituations; ++t) {
    const int n_jobs = 1 + static_cast<int>(rng() % kExactLimit);
    const LayerSituation s = random_situation(rng, n_jobs);
    const LayerPlan brute = plan_brute_force(s);
    const LayerPlan exact = plan_exact(s);
    ASSERT_NEAR(exact.makespan_us, brute.makespan_us, 1e-9) << "situation " << t;
    // The plan's own placement reproduces its makespan.
    std::vector<uint8_t> on_gpu(s.jobs.size());
    for (size_t i = 0; i < s.jobs.size(); ++i) on_gpu[i] = exact.placement[i] != Placement::Cpu;
    ASSERT_NEAR(evaluate_assignment(s, on_gpu), exact.makespan_us, 1e-9);
    const LayerPlan greedy = plan_greedy(s);
    ASSERT_GE(greedy.makespan_us, brute.makespan_us - 1e-9);
    const double excess = greedy.makespan_us / brute.makespan_us - 1.0;
    excess_sum += excess;
    excess_max = std::max(excess_max, excess);
    n_greedy_optimal += excess < 1e-12;
  }
  const double mean = excess_sum / kSituations;
  std::printf(
      "greedy vs optimum over %d situations: mean excess %.4f%%, max %.2f%%, optimal in %d\n",
      kSituations, 100.0 * mean, 100.0 * excess_max, n_greedy_optimal);
  EXPECT_LT(mean, 0.05);
}

// The GPU side's order (resident first, copies by Johnson's rule) equals the best of every
// permutation of the copies, so enumerating assignments is a true brute force.
TEST(PlannerOptimality, JohnsonOrderMatchesEveryPermutation) {
  std::mt19937_64 rng(7);
  for (int t = 0; t < 500; ++t) {
    LayerSituation s = random_situation(rng, 1 + static_cast<int>(rng() % 6));
    for (ExpertJob& j : s.jobs) {
      if (j.residency == Residency::InFlight) j.residency = Residency::Absent;
    }
    std::vector<uint8_t> all_gpu(s.jobs.size(), 1);
    const double johnson = evaluate_assignment(s, all_gpu);
    std::vector<int> copies, resident;
    for (size_t i = 0; i < s.jobs.size(); ++i) {
      (s.jobs[i].residency == Residency::Absent ? copies : resident).push_back(static_cast<int>(i));
    }
    double base_gpu = s.gpu_free_us;
    for (int i : resident) base_gpu += s.jobs[i].gpu_us;
    std::sort(copies.begin(), copies.end());
    double best = 1e300;
    do {
      double pcie = s.pcie_free_us, gpu = base_gpu;
      for (int i : copies) {
        pcie += s.jobs[i].copy_us;
        gpu = std::max(gpu, pcie) + s.jobs[i].gpu_us;
      }
      best = std::min(best, gpu);
    } while (std::next_permutation(copies.begin(), copies.end()));
    best = std::max(best, s.cpu_free_us);
    ASSERT_NEAR(johnson, best, 1e-9) << "situation " << t;
  }
}

TEST(PlannerOptimality, DecodeWithIdenticalJobsIsExact) {
  // Eight experts, one token each, none cached: the symmetric case the search prunes hardest.
  LayerSituation s;
  for (int i = 0; i < 8; ++i) {
    ExpertJob j;
    j.expert = i;
    j.n_tokens = 1;
    j.cpu_us = 158;
    j.gpu_us = 23;
    j.copy_us = 424;
    s.jobs.push_back(j);
  }
  const LayerPlan exact = plan_exact(s);
  EXPECT_NEAR(exact.makespan_us, plan_brute_force(s).makespan_us, 1e-9);
  // Two copies overlap six CPU experts: 6 * 158 = 948 >= 424 + 424 + 23.
  EXPECT_EQ(exact.copy_order.size(), 2u);
}

TEST(PlannerOptimality, MismatchedAssignmentIsRejected) {
  LayerSituation s;
  s.jobs.resize(3);
  EXPECT_THROW(evaluate_assignment(s, std::vector<uint8_t>(2, 0)), std::invalid_argument);
}

}  // namespace
}  // namespace tandem::sched
