#include "scheduler/deferral.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>

namespace tandem::sched {

void check_defer_experts(int32_t n_defer, int32_t n_expert_used, const std::string& what) {
  if (n_defer < 0) {
    throw std::invalid_argument(what + " " + std::to_string(n_defer) + " must be >= 0");
  }
  if (n_defer >= n_expert_used) {
    throw std::invalid_argument(what + " " + std::to_string(n_defer) +
                                " must be below the model's " + std::to_string(n_expert_used) +
                                " experts per token");
  }
}

void lowest_weight_slots(std::span<const float> weights, int32_t n_defer,
                         std::vector<int32_t>& slots) {
  const auto k = static_cast<int32_t>(weights.size());
  slots.resize(static_cast<size_t>(k));
  std::iota(slots.begin(), slots.end(), 0);
  std::sort(slots.begin(), slots.end(), [&](int32_t a, int32_t b) {
    return weights[a] < weights[b] || (weights[a] == weights[b] && a > b);
  });
  slots.resize(static_cast<size_t>(std::clamp(n_defer, 0, k)));
}

}  // namespace tandem::sched
