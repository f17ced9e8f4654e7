// Which experts live in VRAM. The budget becomes a number of expert slots per MoE layer (pinned
// layers hold all their experts); admission and eviction follow the predicted chance of use at
// the next step (tandem's default), a router-score moving average, LRU or LFU, or nothing at
// all (a fixed resident set).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace tandem::sched {

// NextUse: ranks by the predicted probability that the next step uses the expert: its long-run
// share of tokens, raised for the experts the layer's last step used by the layer's measured
// temporal locality (how much more often those repeat than their share predicts).
enum class Eviction { NextUse, Score, Lru, Lfu, Fixed };
const char* eviction_name(Eviction e);
// "next-use" | "score" | "lru" | "lfu" | "fixed"; throws std::invalid_argument naming the value.
Eviction parse_eviction(const std::string& name);

// Slots per layer from a byte budget: pinned layers first (all experts), the rest shared
// evenly over the other layers (remainder to the last layers). Throws std::invalid_argument
// when the pinned layers alone exceed the budget, naming both sizes.
std::vector<int32_t> slots_for_budget(double budget_bytes, double expert_bytes, int32_t n_layer,
                                      int32_t n_expert, const std::vector<int32_t>& pin_layers);

class ExpertCache {
 public:
  // `score_alpha`: weight of the newest step in the score moving average.
  ExpertCache(int32_t n_layer, int32_t n_expert, std::vector<int32_t> slots, Eviction eviction,
              double score_alpha = 0.1);

  int32_t n_layer() const { return n_layer_; }
  int32_t n_expert() const { return n_expert_; }
  int32_t slots(int32_t layer) const { return slots_[layer]; }
  int64_t total_slots() const;
  int64_t n_resident() const;
  bool resident(int32_t layer, int32_t expert) const { return state(layer, expert).resident; }
  std::vector<int32_t> resident_experts(int32_t layer) const;
  Eviction eviction() const { return eviction_; }

  // Fills a layer's free slots with `experts` in order (initial placement).
  void fill(int32_t layer, const std::vector<int32_t>& experts);
  // One step's routing of a layer over n_tokens tokens: gate_sum[e] is expert e's summed gate
  // weight and tokens[e] how many tokens it got (both 0 if unused). Updates scores (moving
  // average), token shares, the layer's locality, recency and use counts.
  void record_step(int32_t layer, const std::vector<float>& gate_sum,
                   const std::vector<int32_t>& tokens, int32_t n_tokens);
  // Whether an expert now on the GPU transiently (copied or prefetched) should stay, and if so
  // which resident it replaces (-1: a free slot). Fixed caches never admit.
  bool should_admit(int32_t layer, int32_t expert, int32_t* victim) const;
  // Makes `expert` resident, evicting `victim` (>= 0) first.
  void admit(int32_t layer, int32_t expert, int32_t victim);
  // The router-score moving average the Score policy ranks by.
  double score(int32_t layer, int32_t expert) const { return state(layer, expert).score; }
  // The NextUse policy's parts: an expert's long-run share of tokens, and how much more likely
  // than its share an expert the layer's last step used is to be used again (0: no locality).
  double token_share(int32_t layer, int32_t expert) const { return state(layer, expert).share; }
  double locality(int32_t layer) const { return locality_[layer]; }
  double next_use_probability(int32_t layer, int32_t expert) const;
  // Of the layer's experts a step did not use (tokens[e] == 0), the share that is resident:
  // how often a uniformly random wrong prediction would name a cached expert. 0 if all are used.
  double resident_share_of_unused(int32_t layer, const std::vector<int32_t>& tokens) const;

 private:
  struct Entry {
    bool resident = false;
    double score = 0.0;
    int64_t last_use = -1;
    int64_t uses = 0;
    double share = 0.0;         // exponential average of (tokens routed here / step tokens)
    bool in_last_step = false;  // the layer's latest recorded step used it
  };
  const Entry& state(int32_t layer, int32_t expert) const {
    return entries_[static_cast<size_t>(layer) * n_expert_ + expert];
  }
  Entry& state(int32_t layer, int32_t expert) {
    return entries_[static_cast<size_t>(layer) * n_expert_ + expert];
  }
  // Lower ranks are evicted first.
  double rank(int32_t layer, const Entry& e) const;
  double next_use(int32_t layer, const Entry& e) const;
  void update_locality(int32_t layer, const std::vector<int32_t>& tokens, int32_t n_tokens);

  int32_t n_layer_, n_expert_;
  std::vector<int32_t> slots_;
  std::vector<int32_t> n_used_;
  Eviction eviction_;
  double alpha_;
  int64_t clock_ = 0;
  std::vector<Entry> entries_;
  std::vector<double> locality_;     // per layer
  std::vector<int64_t> n_measured_;  // per layer: steps that measured locality
};

}  // namespace tandem::sched
