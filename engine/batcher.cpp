#include "engine/batcher.h"

#include <algorithm>

#include "engine/engine.h"
#include "engine/tokenizer.h"

namespace tandem {
namespace {

using Clock = std::chrono::steady_clock;

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

// Position of the earliest stop string in `text` at or after `from`, or npos.
size_t find_stop(const std::string& text, size_t from, const std::vector<std::string>& stops) {
  size_t best = std::string::npos;
  for (const std::string& s : stops) {
    const size_t start = from >= s.size() ? from - s.size() + 1 : 0;
    const size_t pos = text.find(s, start);
    if (pos != std::string::npos && pos < best) best = pos;
  }
  return best;
}

// Length of the longest tail of `text` (after `from`) that could still grow into a stop string;
// that much text is held back until the next token decides.
size_t partial_stop_tail(const std::string& text, size_t from,
                         const std::vector<std::string>& stops) {
  size_t hold = 0;
  for (const std::string& s : stops) {
    for (size_t n = std::min(s.size() - 1, text.size() - from); n > hold; --n) {
      if (text.compare(text.size() - n, n, s, 0, n) == 0) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}

}  // namespace

const char* finish_reason_name(FinishReason reason) {
  switch (reason) {
    case FinishReason::Stop:
      return "stop";
    case FinishReason::Length:
      return "length";
    case FinishReason::Cancelled:
      return "cancelled";
    case FinishReason::Error:
      return "error";
    case FinishReason::None:
      break;
  }
  return "";
}

// ---- GenerationStream ----

bool GenerationStream::read(Chunk& out, std::chrono::milliseconds timeout) {
  std::unique_lock lock(mutex_);
  cv_.wait_for(lock, timeout,
               [this] { return pending_.done || !pending_.text.empty() || pending_.n_tokens > 0; });
  if (!pending_.done && pending_.text.empty() && pending_.n_tokens == 0) return false;
  out = std::move(pending_);
  pending_ = Chunk{};
  // A finished stream keeps answering "done" to later reads.
  if (out.done) pending_ = Chunk{"", 0, true, out.finish, out.error, out.stats};
  return true;
}

void GenerationStream::cancel() {
  std::lock_guard lock(mutex_);
  cancelled_ = true;
}

bool GenerationStream::cancelled() const {
  std::lock_guard lock(mutex_);
  return cancelled_;
}

void GenerationStream::append(const std::string& text, int32_t n_tokens) {
  {
    std::lock_guard lock(mutex_);
    pending_.text += text;
    pending_.n_tokens += n_tokens;
  }
  cv_.notify_all();
}

void GenerationStream::finish(FinishReason reason, const GenerationStats& stats,
                              std::string error) {
  {
    std::lock_guard lock(mutex_);
    pending_.done = true;
    pending_.finish = reason;
    pending_.stats = stats;
    pending_.error = std::move(error);
  }
  cv_.notify_all();
}

// ---- Batcher state ----

struct Batcher::Task {
  GenerationRequest request;
  std::shared_ptr<GenerationStream> stream;
  Clock::time_point submitted;
};

struct Batcher::Slot {
  int32_t seq = 0;
  std::unique_ptr<Task> task;  // null: free
  std::unique_ptr<Sampler> sampler;
  std::unique_ptr<TextStreamer> streamer;
  std::vector<int32_t> history;  // prompt + generated tokens
  size_t n_prompt_fed = 0;       // prompt tokens already in the KV cache
  int32_t n_past = 0;            // cached positions
  int32_t pending = -1;          // sampled token to feed in the next step
  int32_t n_generated = 0;
  int32_t max_tokens = 0;
  std::string text;   // generated text so far
  size_t n_sent = 0;  // bytes of `text` handed to the stream
  bool started = false, prompt_done = false;
  Clock::time_point t_start, t_prompt_done;

  bool active() const { return task != nullptr; }
  bool in_prefill() const { return active() && n_prompt_fed < task->request.prompt.size(); }
};

Batcher::Batcher(Engine& engine, const Tokenizer& tokenizer, const BatcherOptions& options)
    : engine_(engine), tokenizer_(tokenizer), options_(options) {
  if (options_.max_parallel < 1 || options_.max_parallel > engine.options().n_seq_max) {
    throw std::invalid_argument("batcher max_parallel " + std::to_string(options_.max_parallel) +
                                " must be in [1, engine n_seq_max " +
                                std::to_string(engine.options().n_seq_max) + "]");
  }
  if (options_.prefill_chunk < 1) throw std::invalid_argument("batcher prefill_chunk must be >= 1");
  for (int32_t i = 0; i < options_.max_parallel; ++i) {
    slots_.push_back(std::make_unique<Slot>());
    slots_.back()->seq = i;
  }
  metrics_.max_parallel = options_.max_parallel;
  metrics_.kv_capacity = int64_t{options_.max_parallel} * engine.options().n_ctx;
  thread_ = std::thread([this] { loop(); });
}

Batcher::~Batcher() {
  shutdown(std::chrono::milliseconds(0));
}

int32_t Batcher::n_ctx() const {
  return engine_.options().n_ctx;
}

std::shared_ptr<GenerationStream> Batcher::submit(GenerationRequest request) {
  if (request.prompt.empty()) throw std::invalid_argument("the prompt has no tokens");
  if (static_cast<int64_t>(request.prompt.size()) >= n_ctx()) {
    throw std::invalid_argument("the prompt has " + std::to_string(request.prompt.size()) +
                                " tokens; the context holds " + std::to_string(n_ctx()) +
                                " (prompt + at least one generated token)");
  }
  auto task = std::make_unique<Task>();
  task->request = std::move(request);
  task->stream = std::make_shared<GenerationStream>();
  task->submitted = Clock::now();
  auto stream = task->stream;
  {
    std::lock_guard lock(mutex_);
    if (stopping_) throw BatcherStoppedError("the server is shutting down");
    const size_t free_slots = static_cast<size_t>(options_.max_parallel - metrics_.n_active);
    if (queue_.size() >= static_cast<size_t>(options_.queue_limit) + free_slots) {
      ++metrics_.n_requests_rejected;
      throw QueueFullError("all " + std::to_string(options_.max_parallel) + " slots are busy and " +
                           std::to_string(queue_.size()) + " requests are waiting");
    }
    queue_.push_back(std::move(task));
    metrics_.n_queued = static_cast<int32_t>(queue_.size());
  }
  cv_.notify_all();
  return stream;
}

void Batcher::shutdown(std::chrono::milliseconds grace) {
  std::deque<std::unique_ptr<Task>> dropped;
  {
    std::lock_guard lock(mutex_);
    stopping_ = true;
    dropped.swap(queue_);
    metrics_.n_queued = 0;
  }
  cv_.notify_all();
  for (auto& t : dropped)
    t->stream->finish(FinishReason::Cancelled, {}, "the server is shutting down");
  const auto deadline = Clock::now() + grace;
  while (Clock::now() < deadline) {
    {
      std::lock_guard lock(mutex_);
      if (metrics_.n_active == 0) break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  {
    std::lock_guard lock(mutex_);
    cancel_all_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
}

BatcherMetrics Batcher::metrics() const {
  std::lock_guard lock(mutex_);
  return metrics_;
}

// ---- The loop (its own thread; the only one touching slots_ and the engine) ----

void Batcher::loop() {
  while (wait_for_work()) {
    admit_queued();
    drop_cancelled();
    step();
  }
  for (auto& s : slots_) {
    if (s->active()) finish_slot(*s, FinishReason::Cancelled, "the server is shutting down");
  }
}

bool Batcher::wait_for_work() {
  const bool any_active =
      std::any_of(slots_.begin(), slots_.end(), [](const auto& s) { return s->active(); });
  std::unique_lock lock(mutex_);
  if (cancel_all_) return false;
  if (any_active) return true;
  cv_.wait(lock, [this] { return !queue_.empty() || stopping_ || cancel_all_; });
  return !cancel_all_ && !(stopping_ && queue_.empty());
}

void Batcher::admit_queued() {
  for (auto& slot : slots_) {
    if (slot->active()) continue;
    std::unique_ptr<Task> task;
    {
      std::lock_guard lock(mutex_);
      if (queue_.empty()) return;
      task = std::move(queue_.front());
      queue_.pop_front();
      metrics_.n_queued = static_cast<int32_t>(queue_.size());
      ++metrics_.n_active;
    }
    Slot& s = *slot;
    const GenerationRequest& r = task->request;
    s.sampler = std::make_unique<Sampler>(r.sampling);
    s.streamer = std::make_unique<TextStreamer>(tokenizer_);
    s.history = r.prompt;
    s.n_prompt_fed = 0;
    s.n_past = 0;
    s.pending = -1;
    s.n_generated = 0;
    s.max_tokens = std::clamp(r.max_tokens, 1, n_ctx() - static_cast<int32_t>(r.prompt.size()));
    s.text.clear();
    s.n_sent = 0;
    s.started = s.prompt_done = false;
    s.task = std::move(task);
  }
}

void Batcher::drop_cancelled() {
  for (auto& s : slots_) {
    if (s->active() && s->task->stream->cancelled()) finish_slot(*s, FinishReason::Cancelled);
  }
}

void Batcher::step() {
  std::vector<BatchEntry> batch;
  std::vector<Slot*> outputs;  // slot of each logits row, in batch order
  std::vector<std::pair<Slot*, int32_t>> fed;
  for (auto& s : slots_) {
    if (!s->active() || s->pending < 0) continue;
    batch.push_back({s->pending, s->n_past, s->seq, true});
    outputs.push_back(s.get());
    fed.emplace_back(s.get(), 1);
  }
  const int32_t n_decode = static_cast<int32_t>(batch.size());
  // Prompt chunks, oldest request first, up to prefill_chunk tokens in all.
  std::vector<Slot*> prefill;
  for (auto& s : slots_)
    if (s->in_prefill()) prefill.push_back(s.get());
  std::sort(prefill.begin(), prefill.end(),
            [](const Slot* a, const Slot* b) { return a->task->submitted < b->task->submitted; });
  int32_t budget = options_.prefill_chunk;
  for (Slot* s : prefill) {
    if (budget == 0) break;
    const std::vector<int32_t>& prompt = s->task->request.prompt;
    const auto take =
        static_cast<int32_t>(std::min<size_t>(budget, prompt.size() - s->n_prompt_fed));
    for (int32_t j = 0; j < take; ++j) {
      const size_t i = s->n_prompt_fed + j;
      batch.push_back({prompt[i], static_cast<int32_t>(i), s->seq, i + 1 == prompt.size()});
    }
    if (s->n_prompt_fed + take == prompt.size()) outputs.push_back(s);
    fed.emplace_back(s, take);
    budget -= take;
    if (!s->started) {
      s->started = true;
      s->t_start = Clock::now();
    }
  }
  if (batch.empty()) return;
  const auto t0 = Clock::now();
  try {
    engine_.forward(batch, logits_);
  } catch (const std::exception& e) {
    for (auto& [s, n] : fed) {
      if (s->active())
        finish_slot(*s, FinishReason::Error, std::string("forward step failed: ") + e.what());
    }
    return;
  }
  for (auto& [s, n] : fed) {
    s->n_past += n;
    if (s->pending >= 0)
      s->pending = -1;
    else
      s->n_prompt_fed += static_cast<size_t>(n);
  }
  record_step(ms_between(t0, Clock::now()) / 1000.0, static_cast<int32_t>(batch.size()) - n_decode,
              n_decode);
  const size_t n_vocab = static_cast<size_t>(engine_.n_vocab());
  for (size_t k = 0; k < outputs.size(); ++k) {
    handle_logits(*outputs[k], logits_.data() + k * n_vocab);
  }
}

void Batcher::handle_logits(Slot& s, const float* logits) {
  if (!s.prompt_done) {
    s.prompt_done = true;
    s.t_prompt_done = Clock::now();
  }
  const int32_t token =
      s.sampler->sample(std::span(logits, static_cast<size_t>(engine_.n_vocab())), s.history);
  if (!s.task->request.ignore_eos && tokenizer_.is_end_of_generation(token)) {
    s.text += s.streamer->flush();  // held-back bytes of an unfinished character
    finish_slot(s, FinishReason::Stop);
    return;
  }
  emit_token(s, token);
}

void Batcher::emit_token(Slot& s, int32_t token) {
  const std::vector<std::string>& stops = s.task->request.stop;
  s.history.push_back(token);
  ++s.n_generated;
  const size_t before = s.text.size();
  s.text += s.streamer->push(token);
  const bool at_limit = s.n_generated >= s.max_tokens || s.n_past >= n_ctx();
  if (at_limit) s.text += s.streamer->flush();
  const size_t stop_at = find_stop(s.text, before, stops);
  if (stop_at != std::string::npos) {
    s.task->stream->append(s.text.substr(s.n_sent, stop_at > s.n_sent ? stop_at - s.n_sent : 0), 1);
    s.n_sent = s.text.size();
    finish_slot(s, FinishReason::Stop);
    return;
  }
  const size_t hold = at_limit ? 0 : partial_stop_tail(s.text, s.n_sent, stops);
  const size_t ready = s.text.size() - hold;
  s.task->stream->append(s.text.substr(s.n_sent, ready - s.n_sent), 1);
  s.n_sent = ready;
  if (at_limit)
    finish_slot(s, FinishReason::Length);
  else
    s.pending = token;
}

void Batcher::finish_slot(Slot& s, FinishReason reason, const std::string& error) {
  const auto now = Clock::now();
  GenerationStats stats;
  stats.n_prompt = static_cast<int32_t>(s.task->request.prompt.size());
  stats.n_generated = s.n_generated;
  if (s.started) stats.queue_ms = ms_between(s.task->submitted, s.t_start);
  if (s.prompt_done) {
    stats.prompt_ms = ms_between(s.t_start, s.t_prompt_done);
    stats.predicted_ms = ms_between(s.t_prompt_done, now);
  }
  if (reason != FinishReason::Cancelled && reason != FinishReason::Error &&
      s.n_sent < s.text.size()) {
    s.task->stream->append(s.text.substr(s.n_sent), 0);
  }
  engine_.clear_sequence(s.seq);
  {
    // Metrics first, so a reader that sees the end also sees its counts.
    std::lock_guard lock(mutex_);
    --metrics_.n_active;
    metrics_.n_generated_tokens += static_cast<uint64_t>(s.n_generated);
    if (reason == FinishReason::Cancelled)
      ++metrics_.n_requests_cancelled;
    else
      ++metrics_.n_requests_finished;
  }
  s.task->stream->finish(reason, stats, error);
  s.task.reset();
  s.sampler.reset();
  s.streamer.reset();
  s.pending = -1;
}

void Batcher::record_step(double seconds, int32_t n_prompt, int32_t n_decode) {
  const auto now = Clock::now();
  int64_t kv_used = 0;
  for (const auto& s : slots_)
    if (s->active()) kv_used += s->n_past;
  std::lock_guard lock(mutex_);
  const double total = n_prompt + n_decode;
  metrics_.n_steps++;
  metrics_.n_prompt_tokens += static_cast<uint64_t>(n_prompt);
  metrics_.n_decode_tokens += static_cast<uint64_t>(n_decode);
  metrics_.prompt_seconds += seconds * n_prompt / total;
  metrics_.decode_seconds += seconds * n_decode / total;
  metrics_.kv_used = kv_used;
  metrics_.experts = engine_.expert_stats();
  // Rates over the steps of the last 10 seconds.
  recent_.push_back({now, seconds, n_prompt, n_decode});
  while (!recent_.empty() && now - recent_.front().end > std::chrono::seconds(10))
    recent_.pop_front();
  double t_prompt = 0, t_decode = 0, n_p = 0, n_d = 0;
  for (const StepRecord& r : recent_) {
    const double n = r.n_prompt + r.n_decode;
    t_prompt += r.seconds * r.n_prompt / n;
    t_decode += r.seconds * r.n_decode / n;
    n_p += r.n_prompt;
    n_d += r.n_decode;
  }
  metrics_.prompt_tokens_per_second = t_prompt > 0 ? n_p / t_prompt : 0;
  metrics_.decode_tokens_per_second = t_decode > 0 ? n_d / t_decode : 0;
}

}  // namespace tandem
