// Recorded or synthetic MoE routing: for every step and layer, the top-k expert ids and gate
// weights of each token. The JSON-lines format (docs/scheduler.md) is the one the engine writes
// with --record-routing; the synthetic generator gives skewed, temporally local traces for
// tests and what-if runs.
#pragma once

#include <cstdint>
#include <iosfwd>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem::sched {

class TraceError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Phase { Prefill, Decode };

// One layer of one step: ids and weights are [n_tokens][n_expert_used], row-major.
struct LayerRouting {
  int32_t n_tokens = 0;
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

struct RoutingStep {
  int32_t seq = 0;   // sequence (request) the step belongs to
  int32_t step = 0;  // step index within the sequence
  Phase phase = Phase::Decode;
  std::vector<LayerRouting> layers;  // one per MoE layer, in order
};

struct RoutingTrace {
  std::string model;
  int32_t n_layer = 0;  // MoE layers traced
  int32_t n_expert = 0;
  int32_t n_expert_used = 0;
  double prefetch_accuracy = -1.0;  // < 0: not recorded
  std::vector<RoutingStep> steps;
};

// Writes the header line and one line per (step, layer).
void write_trace(const RoutingTrace& t, std::ostream& out);
// Reads a trace; errors name the source and line. Lines may come in any step order but each
// (seq, step) must have every layer exactly once.
RoutingTrace read_trace(std::istream& in, const std::string& source);
RoutingTrace load_trace(const std::string& path);
void save_trace(const RoutingTrace& t, const std::string& path);

// Synthetic routing (docs/scheduler.md, "Synthetic traces"):
//  - each layer has its own popularity order of the experts (a seeded permutation) with Zipf
//    weights 1 / rank^zipf_s;
//  - a token's k experts are drawn without replacement; each draw first, with probability
//    `reuse`, repeats one of the previous token's experts at that layer (temporal locality),
//    else samples the Zipf distribution;
//  - gate weights are a softmax over k standard normal logits, largest first.
// Sequence 0 is a calibration prompt (popularity profiling, untimed); sequence 1 is the
// measured request: a prefill of n_prompt tokens, then n_decode single-token steps.
struct SyntheticTraceConfig {
  int32_t n_layer = 0;
  int32_t n_expert = 0;
  int32_t n_expert_used = 0;
  double zipf_s = 0.9;
  double reuse = 0.3;
  int32_t n_prompt = 512;
  int32_t n_decode = 64;
  uint64_t seed = 1;
  double prefetch_accuracy = 0.85;
};
RoutingTrace make_synthetic_trace(const SyntheticTraceConfig& c);

}  // namespace tandem::sched
