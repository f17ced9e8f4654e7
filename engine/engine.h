// The inference engine: runs forward steps of a loaded model over a batch of tokens that may
// belong to several sequences, each with its own region of the KV cache.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

namespace tandem {

class Accelerator;
class Model;
class TraceRecorder;
struct ExpertRunStats;
struct Routing;

enum class KvType { F32, F16 };

// One token of a forward step.
struct BatchEntry {
  int32_t token = 0;
  int32_t pos = 0;      // position in its sequence; positions 0..pos-1 must already be cached
  int32_t seq = 0;      // sequence id in [0, n_seq_max)
  bool logits = false;  // return this token's logits
};

struct EngineOptions {
  int32_t n_ctx = 4096;   // positions per sequence
  int32_t n_seq_max = 1;  // sequences that can be live at once (ids 0..n_seq_max-1)
  int32_t n_threads = 0;  // 0: all physical cores
  KvType kv_type = KvType::F32;
  // Optional accelerator (not owned). Experts that fit in expert_cache_bytes of its memory are
  // cached there and run there; the others run on the CPU at the same time.
  Accelerator* accelerator = nullptr;
  uint64_t expert_cache_bytes = 0;
  // How experts are placed with an accelerator: empty keeps a fixed cache (experts in id order,
  // cached ones on the accelerator); a policy name hands placement to the scheduler.
  std::string expert_policy;
  std::string hardware_profile;     // the scheduler's cost model source (empty: default)
  std::vector<int32_t> pin_layers;  // layers whose experts the scheduler keeps resident
  std::string expert_eviction = "next-use";  // the tandem policy's cache ranking
  // Expert deferral (0: off; below the model's experts per token): each token's
  // `defer_experts` lowest-weight experts of a layer are added to the hidden state after the
  // next layer's attention instead of before it (not in the last layer). An approximation
  // that lets them overlap that attention; the engine computes them in their own layer, so
  // here it changes only the numbers (docs/scheduler.md, "Expert deferral").
  int32_t defer_experts = 0;
  // Called on the forward thread with every MoE layer's routing of the batch (optional).
  std::function<void(int32_t layer, std::span<const BatchEntry> batch, const Routing& routing)>
      routing_observer;
  TraceRecorder* trace = nullptr;   // optional (not owned): spans of expert work
};


class Engine {
 public:
  Engine(const Model& model, const EngineOptions& options);
  ~Engine();
  Engine(const Engine&) = delete;
  Engine& operator=(const Engine&) = delete;

  // Processes the whole batch in one pass through every layer (experts see all its tokens)
  // and writes the logits of entries marked `logits`, in batch order, to `logits`
  // ([n_out][n_vocab], resized as needed). Throws std::invalid_argument for a bad entry.
  void forward(std::span<const BatchEntry> batch, std::vector<float>& logits);

  // Forgets a sequence's cached positions so its id can be reused.
  void clear_sequence(int32_t seq);

  int32_t n_vocab() const;
  // Where experts ran so far (CPU / accelerator), summed over steps and layers.
  const ExpertRunStats& expert_stats() const;
  // Experts of `layer` held in the accelerator's expert cache now (0 without one).
  int32_t cached_experts(int32_t layer) const;
  // Whether the model's weights are page-locked with the accelerator (Accelerator::register_host:
  // expert copies then go straight over DMA), and the seconds that took at construction.
  bool weights_page_locked() const;
  double page_lock_seconds() const;
  const EngineOptions& options() const { return options_; }
  const Model& model() const { return model_; }

 private:
  struct State;
  const Model& model_;
  EngineOptions options_;
  std::unique_ptr<State> state_;
};

}  // namespace tandem
