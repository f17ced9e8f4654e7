// One in-order stream of the sim accelerator: a worker thread that runs queued ops one after
// another and keeps the stream's virtual clock.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <mutex>
#include <string>
#include <thread>

namespace tandem {

class SimStream {
 public:
  // An op gets the stream's virtual clock (microseconds) and advances it. Only the worker
  // thread touches the clock while ops run, so ops need no locking of their own.
  using Op = std::function<void(double& clock_us)>;

  explicit SimStream(std::string name);
  ~SimStream();  // finishes queued work, then stops the worker
  SimStream(const SimStream&) = delete;
  SimStream& operator=(const SimStream&) = delete;

  void enqueue(Op op);
  // Blocks until every op queued so far has run. Rethrows (once) the first exception an op
  // threw since the last drain, so errors inside the worker reach the host thread.
  void drain();
  // The virtual clock; call after drain() for a value that includes all queued work.
  double clock_us() const;
  const std::string& name() const { return name_; }

 private:
  void run();

  std::string name_;
  mutable std::mutex mutex_;
  std::condition_variable work_cv_, idle_cv_;
  std::deque<Op> queue_;
  bool busy_ = false;
  bool stop_ = false;
  double clock_us_ = 0.0;
  std::exception_ptr error_;
  std::thread worker_;
};

}  // namespace tandem
