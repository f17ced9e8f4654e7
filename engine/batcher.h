// Continuous batching: one thread owns the Engine and every live sequence. Callers (HTTP
// threads) submit requests to a bounded queue and read text back from a GenerationStream; each
// forward step mixes the next token of every decoding sequence with prompt chunks of sequences
// still in prefill, so the experts see the tokens of all sequences at once.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "engine/expert_executor.h"
#include "engine/sampler.h"

namespace tandem {

class Engine;
class Tokenizer;

// The queue is full: the caller should retry later (HTTP 503).
class QueueFullError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};
// The batcher no longer accepts work (shutting down).
class BatcherStoppedError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GenerationRequest {
  std::vector<int32_t> prompt;  // must be non-empty and shorter than the context
  int32_t max_tokens = 16;      // clamped to what the context has left
  SamplingParams sampling;
  std::vector<std::string> stop;  // generation ends before the first of these strings
  bool ignore_eos = false;
};

enum class FinishReason { None, Stop, Length, Cancelled, Error };
const char* finish_reason_name(FinishReason reason);  // "stop", "length", ...

struct GenerationStats {
  int32_t n_prompt = 0;
  int32_t n_generated = 0;
  double queue_ms = 0;      // submitted -> first forward step
  double prompt_ms = 0;     // first step -> prompt's logits
  double predicted_ms = 0;  // prompt's logits -> last token
};

// Output handed from the batcher to one reader. Thread-safe.
class GenerationStream {
 public:
  struct Chunk {
    std::string text;      // text since the last read (valid UTF-8)
    int32_t n_tokens = 0;  // tokens since the last read
    bool done = false;
    FinishReason finish = FinishReason::None;
    std::string error;      // FinishReason::Error only
    GenerationStats stats;  // final once done
  };
  // Waits until there is new text or the end, at most `timeout`; false when nothing came.
  bool read(Chunk& out, std::chrono::milliseconds timeout);
  // Asks the batcher to drop the sequence (client gone); it frees the slot within one step.
  void cancel();
  bool cancelled() const;

 private:
  friend class Batcher;
  void append(const std::string& text, int32_t n_tokens);
  void finish(FinishReason reason, const GenerationStats& stats, std::string error = {});

  mutable std::mutex mutex_;
  std::condition_variable cv_;
  Chunk pending_;
  bool cancelled_ = false;
};

struct BatcherOptions {
  int32_t max_parallel = 8;     // live sequences; the Engine needs n_seq_max >= this
  int32_t queue_limit = 64;     // waiting requests before QueueFullError
  int32_t prefill_chunk = 256;  // prompt tokens per step over all sequences
};

struct BatcherMetrics {
  uint64_t n_requests_finished = 0, n_requests_cancelled = 0, n_requests_rejected = 0;
  uint64_t n_prompt_tokens = 0, n_decode_tokens = 0, n_steps = 0;  // tokens run through the model
  uint64_t n_generated_tokens = 0;  // tokens sampled for finished requests
  double prompt_seconds = 0;        // step time spent on prompt tokens (split by token share)
  double decode_seconds = 0;        // step time spent on generated tokens
  double prompt_tokens_per_second = 0, decode_tokens_per_second = 0;  // over recent steps
  int32_t n_queued = 0, n_active = 0, max_parallel = 0;
  int64_t kv_used = 0, kv_capacity = 0;  // cached positions, over all sequences
  ExpertRunStats experts;
};

class Batcher {
 public:
  // The engine (and its model's tokenizer) must outlive the batcher. Starts the loop thread.
  Batcher(Engine& engine, const Tokenizer& tokenizer, const BatcherOptions& options);
  ~Batcher();
  Batcher(const Batcher&) = delete;
  Batcher& operator=(const Batcher&) = delete;

  // Queues a request. Throws std::invalid_argument for an empty or too long prompt,
  // QueueFullError when the queue is full, BatcherStoppedError after shutdown began.
  std::shared_ptr<GenerationStream> submit(GenerationRequest request);

  // Stops accepting work, lets running sequences finish for up to `grace`, cancels the rest
  // (queued ones at once), and joins the loop. Safe to call more than once.
  void shutdown(std::chrono::milliseconds grace);

  BatcherMetrics metrics() const;
  int32_t n_ctx() const;

 private:
  struct Slot;
  struct Task;
  void loop();
  bool wait_for_work();
  void admit_queued();
  void drop_cancelled();
  void step();
  void handle_logits(Slot& slot, const float* logits);
  void emit_token(Slot& slot, int32_t token);
  void finish_slot(Slot& slot, FinishReason reason, const std::string& error = {});
  void record_step(double seconds, int32_t n_prompt, int32_t n_decode);

  Engine& engine_;
  const Tokenizer& tokenizer_;
  BatcherOptions options_;
  std::vector<std::unique_ptr<Slot>> slots_;  // index == sequence id

  mutable std::mutex mutex_;  // guards queue_, stopping_, deadline_, metrics_, recent_
  std::condition_variable cv_;
  std::deque<std::unique_ptr<Task>> queue_;
  bool stopping_ = false;
  bool cancel_all_ = false;
  BatcherMetrics metrics_;
  struct StepRecord {
    std::chrono::steady_clock::time_point end;
    double seconds;
    int32_t n_prompt, n_decode;
  };
  std::deque<StepRecord> recent_;
  std::vector<float> logits_;
  std::thread thread_;
};

}  // namespace tandem
