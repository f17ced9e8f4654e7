// One persistent host thread that runs one task at a time beside the caller. The scheduled
// executor queues a layer's accelerator work on it while the calling thread runs the layer's
// CPU experts: with a CUDA device, queueing a layer's copies and launches costs tens of
// microseconds of driver calls, which the CPU experts would otherwise wait for.
#pragma once

#include <condition_variable>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>

namespace tandem {

class SideThread {
 public:
  SideThread() = default;
  ~SideThread();
  SideThread(const SideThread&) = delete;
  SideThread& operator=(const SideThread&) = delete;

  // Starts `task` on the side thread (created on first use) and returns at once. The previous
  // task must have been joined.
  void run(std::function<void()> task);
  // Waits for the task; rethrows what it threw.
  void join();
  // Waits for the task and drops what it threw (for a caller already unwinding).
  void join_quietly() noexcept;

 private:
  void loop();
  void wait_done(std::unique_lock<std::mutex>& lock);

  std::mutex mutex_;
  std::condition_variable wake_, done_cv_;
  std::function<void()> task_;
  bool has_task_ = false, stop_ = false;
  std::exception_ptr error_;
  std::thread thread_;
};

}  // namespace tandem
