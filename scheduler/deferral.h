// Expert deferral, shared by the engine (which adds the deferred experts' outputs after the
// next layer's attention) and the replay simulator (which overlaps their work with it): which
// of a token's top-k slots are deferred, and the one rule on how many may be.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace tandem::sched {

// Throws std::invalid_argument, prefixed by `what` (the option or key that set it), unless
// 0 <= n_defer < n_expert_used: a token must keep at least one expert in its own layer.
void check_defer_experts(int32_t n_defer, int32_t n_expert_used, const std::string& what);

// The n_defer slots of lowest gate weight among one token's top-k `weights`, lowest first;
// on equal weights the later slot comes first. `slots` is resized to min(n_defer, k).
void lowest_weight_slots(std::span<const float> weights, int32_t n_defer,
                         std::vector<int32_t>& slots);

}  // namespace tandem::sched
