// Spans of work on named tracks, written as a Chrome trace / Perfetto JSON file
// (ui.perfetto.dev, chrome://tracing) so a user can see CPU experts, GPU compute and copies
// overlap layer by layer.
//
// Recording is header-only on purpose: gpu/sim records spans from the gpu library, which the
// engine library depends on, so the recording path must not need engine's object files.
#pragma once

#include <chrono>
#include <cstdint>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

namespace tandem {

// One finished piece of work. Times are microseconds: wall clock since the recorder was
// created for host work (see TraceRecorder::now_us), virtual time for the sim accelerator.
struct TraceSpan {
  std::string name;      // e.g. "expert 17 (9 tok)"
  std::string category;  // e.g. "moe", "copy"
  std::string track;     // a row in the viewer: "cpu experts", "gpu compute", "pcie copy"
  double start_us = 0.0;
  double dur_us = 0.0;
  // Extra key/value pairs shown when the span is selected. Values are written as JSON
  // numbers when they parse as one, else as strings.
  std::vector<std::pair<std::string, std::string>> args;
  // Groups tracks in the viewer; spans on different clocks belong to different processes
  // (the sim accelerator uses "sim (virtual clock)").
  std::string process = "tandem";
};

// Thread-safe collection of spans. add() takes a lock; cost is one vector push.
class TraceRecorder {
 public:
  TraceRecorder() : origin_(std::chrono::steady_clock::now()) {}
  TraceRecorder(const TraceRecorder&) = delete;
  TraceRecorder& operator=(const TraceRecorder&) = delete;

  // Wall-clock microseconds since this recorder was created: the time base of host spans.
  double now_us() const {
    const auto d = std::chrono::steady_clock::now() - origin_;
    return std::chrono::duration<double, std::micro>(d).count();
  }

  void add(TraceSpan span) {
    std::lock_guard<std::mutex> lock(mutex_);
    spans_.push_back(std::move(span));
  }

  // A copy of everything recorded so far, in the order it was added.
  std::vector<TraceSpan> spans() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return spans_;
  }

  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return spans_.size();
  }

  // Writes {"traceEvents": [...], "displayTimeUnit": "ms"}: one complete ("X") event per span
  // plus process_name / thread_name metadata naming each process and track. Throws
  // std::runtime_error naming the path when the file cannot be written.
  void write_chrome_trace(const std::string& path) const;
  // The same document as a string.
  std::string chrome_trace_json() const;

 private:
  std::chrono::steady_clock::time_point origin_;
  mutable std::mutex mutex_;
  std::vector<TraceSpan> spans_;
};

// Records a wall-clock span from construction to destruction (or to finish()). A null
// recorder makes it a no-op, so call sites need no `if (trace)`.
class ScopedSpan {
 public:
  ScopedSpan(TraceRecorder* recorder, std::string name, std::string category, std::string track)
      : recorder_(recorder) {
    if (!recorder_) return;
    span_.name = std::move(name);
    span_.category = std::move(category);
    span_.track = std::move(track);
    span_.start_us = recorder_->now_us();
  }
  ~ScopedSpan() { finish(); }
  ScopedSpan(const ScopedSpan&) = delete;
  ScopedSpan& operator=(const ScopedSpan&) = delete;

  void arg(std::string key, std::string value) {
    if (recorder_) span_.args.emplace_back(std::move(key), std::move(value));
  }
  void finish() {
    if (!recorder_) return;
    span_.dur_us = recorder_->now_us() - span_.start_us;
    recorder_->add(std::move(span_));
    recorder_ = nullptr;
  }

 private:
  TraceRecorder* recorder_;
  TraceSpan span_;
};

}  // namespace tandem
