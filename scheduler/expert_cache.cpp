#include "scheduler/expert_cache.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace tandem::sched {

const char* eviction_name(Eviction e) {
  switch (e) {
    case Eviction::NextUse:
      return "next-use";
    case Eviction::Score:
      return "score";
    case Eviction::Lru:
      return "lru";
    case Eviction::Lfu:
      return "lfu";
    case Eviction::Fixed:
      return "fixed";
  }
  return "?";
}

Eviction parse_eviction(const std::string& name) {
  if (name == "next-use") return Eviction::NextUse;
  if (name == "score") return Eviction::Score;
  if (name == "lru") return Eviction::Lru;
  if (name == "lfu") return Eviction::Lfu;
  if (name == "fixed") return Eviction::Fixed;
  throw std::invalid_argument("unknown cache eviction '" + name +
                              "' (next-use, score, lru, lfu, fixed)");
}

std::vector<int32_t> slots_for_budget(double budget_bytes, double expert_bytes, int32_t n_layer,
                                      int32_t n_expert, const std::vector<int32_t>& pin_layers) {
  if (!(expert_bytes > 0.0) || n_layer <= 0 || n_expert <= 0) {
    throw std::invalid_argument("slots_for_budget: expert size and counts must be positive");
  }
  std::vector<int32_t> slots(n_layer, 0);
  std::vector<uint8_t> pinned(n_layer, 0);
  int64_t total =
      budget_bytes > 0 ? static_cast<int64_t>(std::floor(budget_bytes / expert_bytes)) : 0;
  for (int32_t l : pin_layers) {
    if (l < 0 || l >= n_layer) {
      throw std::invalid_argument("pin layer " + std::to_string(l) + " outside [0, " +
                                  std::to_string(n_layer) + ")");
    }
    if (pinned[l]) continue;
    pinned[l] = 1;
    slots[l] = n_expert;
    total -= n_expert;
  }
  if (total < 0) {
    const double need = static_cast<double>(pin_layers.size()) * n_expert * expert_bytes;
    throw std::invalid_argument("pinned layers need " + std::to_string(need / 1e9) +
                                " GB of expert VRAM but the budget is " +
                                std::to_string(budget_bytes / 1e9) + " GB");
  }
  int32_t n_free = 0;
  for (int32_t l = 0; l < n_layer; ++l) n_free += !pinned[l];
  if (n_free == 0) return slots;
  const int64_t each = std::min<int64_t>(total / n_free, n_expert);
  int64_t rest = total - each * n_free;
  for (int32_t l = n_layer; l-- > 0;) {
    if (pinned[l]) continue;
    slots[l] = static_cast<int32_t>(each);
    if (rest > 0 && slots[l] < n_expert) ++slots[l], --rest;
  }
  return slots;
}

ExpertCache::ExpertCache(int32_t n_layer, int32_t n_expert, std::vector<int32_t> slots,
                         Eviction eviction, double score_alpha)
    : n_layer_(n_layer),
      n_expert_(n_expert),
      slots_(std::move(slots)),
      n_used_(n_layer, 0),
      eviction_(eviction),
      alpha_(score_alpha),
      entries_(static_cast<size_t>(n_layer) * n_expert),
      locality_(n_layer, 0.0),
      n_measured_(n_layer, 0) {
  if (static_cast<int32_t>(slots_.size()) != n_layer) {
    throw std::invalid_argument("ExpertCache: " + std::to_string(slots_.size()) +
                                " slot counts for " + std::to_string(n_layer) + " layers");
  }
  for (int32_t& s : slots_) s = std::clamp(s, 0, n_expert);
}

int64_t ExpertCache::total_slots() const {
  int64_t n = 0;
  for (int32_t s : slots_) n += s;
  return n;
}

int64_t ExpertCache::n_resident() const {
  int64_t n = 0;
  for (int32_t u : n_used_) n += u;
  return n;
}

std::vector<int32_t> ExpertCache::resident_experts(int32_t layer) const {
  std::vector<int32_t> out;
  for (int32_t e = 0; e < n_expert_; ++e) {
    if (resident(layer, e)) out.push_back(e);
  }
  return out;
}

void ExpertCache::fill(int32_t layer, const std::vector<int32_t>& experts) {
  for (int32_t e : experts) {
    if (n_used_[layer] >= slots_[layer]) break;
    Entry& en = state(layer, e);
    if (en.resident) continue;
    en.resident = true;
    ++n_used_[layer];
  }
}

namespace {
// A token share averages over about the last 1000 tokens: long enough that a prompt's profile
// carries through a reply, short enough to follow a change of topic.
constexpr double kShareDecayPerToken = 1e-3;
// The locality average weighs each step's measurement by 5%; its first measurements are
// plainly averaged, so a reply's first tokens already use what they show.
constexpr double kLocalityAlpha = 0.05;
}  // namespace

void ExpertCache::update_locality(int32_t layer, const std::vector<int32_t>& tokens,
                                  int32_t n_tokens) {
  // Of the experts the last step used, the fraction this step uses again, against the fraction
  // their shares alone predict (1 - (1 - share)^n each): the excess, scaled to [0, 1], is
  // the chance a just-used expert returns beyond its share.
  double repeated = 0.0, expected = 0.0;
  int32_t n_last = 0;
  for (int32_t e = 0; e < n_expert_; ++e) {
    const Entry& en = state(layer, e);
    if (!en.in_last_step) continue;
    ++n_last;
    repeated += tokens[e] > 0;
    expected += 1.0 - std::pow(1.0 - std::clamp(en.share, 0.0, 1.0), n_tokens);
  }
  if (n_last == 0) return;
  const double headroom = n_last - expected;
  // A step that would use nearly every such expert anyway (a long prompt) says nothing.
  if (headroom < 0.05 * n_last) return;
  const double excess = std::clamp((repeated - expected) / headroom, 0.0, 1.0);
  const double alpha = std::max(kLocalityAlpha, 1.0 / static_cast<double>(++n_measured_[layer]));
  locality_[layer] = (1.0 - alpha) * locality_[layer] + alpha * excess;
}

void ExpertCache::record_step(int32_t layer, const std::vector<float>& gate_sum,
                              const std::vector<int32_t>& tokens, int32_t n_tokens) {
  if (static_cast<int32_t>(gate_sum.size()) != n_expert_ ||
      static_cast<int32_t>(tokens.size()) != n_expert_ || n_tokens <= 0) {
    throw std::invalid_argument("ExpertCache::record_step: " + std::to_string(gate_sum.size()) +
                                " gate sums and " + std::to_string(tokens.size()) +
                                " token counts for " + std::to_string(n_expert_) +
                                " experts over " + std::to_string(n_tokens) + " tokens");
  }
  ++clock_;
  update_locality(layer, tokens, n_tokens);
  const double keep = std::pow(1.0 - kShareDecayPerToken, n_tokens);
  for (int32_t e = 0; e < n_expert_; ++e) {
    Entry& en = state(layer, e);
    const double g = gate_sum[e];
    en.score = (1.0 - alpha_) * en.score + alpha_ * g;
    en.share = keep * en.share + (1.0 - keep) * tokens[e] / static_cast<double>(n_tokens);
    en.in_last_step = tokens[e] > 0;
    if (en.in_last_step) en.last_use = clock_, ++en.uses;
  }
}

double ExpertCache::resident_share_of_unused(int32_t layer,
                                             const std::vector<int32_t>& tokens) const {
  int32_t unused = 0, unused_resident = 0;
  for (int32_t e = 0; e < n_expert_; ++e) {
    if (tokens[e] > 0) continue;
    ++unused;
    unused_resident += state(layer, e).resident;
  }
  return unused > 0 ? static_cast<double>(unused_resident) / unused : 0.0;
}

double ExpertCache::next_use_probability(int32_t layer, int32_t expert) const {
  return next_use(layer, state(layer, expert));
}

double ExpertCache::next_use(int32_t layer, const Entry& e) const {
  const double r = locality_[layer];
  return e.in_last_step ? r + (1.0 - r) * e.share : e.share;
}

double ExpertCache::rank(int32_t layer, const Entry& e) const {
  switch (eviction_) {
    case Eviction::NextUse:
      return next_use(layer, e);
    case Eviction::Lru:
      return static_cast<double>(e.last_use);
    case Eviction::Lfu:
      return static_cast<double>(e.uses);
    default:
      return e.score;
  }
}

bool ExpertCache::should_admit(int32_t layer, int32_t expert, int32_t* victim) const {
  *victim = -1;
  if (eviction_ == Eviction::Fixed || slots_[layer] == 0 || resident(layer, expert)) return false;
  if (n_used_[layer] < slots_[layer]) return true;
  int32_t worst = -1;
  double worst_rank = 0.0;
  for (int32_t e = 0; e < n_expert_; ++e) {
    if (!resident(layer, e)) continue;
    const double r = rank(layer, state(layer, e));
    if (worst < 0 || r < worst_rank) worst = e, worst_rank = r;
  }
  if (worst < 0 || !(rank(layer, state(layer, expert)) > worst_rank)) return false;
  *victim = worst;
  return true;
}

void ExpertCache::admit(int32_t layer, int32_t expert, int32_t victim) {
  if (victim >= 0) {
    Entry& v = state(layer, victim);
    if (!v.resident) throw std::logic_error("ExpertCache::admit: victim is not resident");
    v.resident = false;
    --n_used_[layer];
  }
  if (n_used_[layer] >= slots_[layer]) throw std::logic_error("ExpertCache::admit: layer full");
  Entry& en = state(layer, expert);
  if (!en.resident) en.resident = true, ++n_used_[layer];
}

}  // namespace tandem::sched
