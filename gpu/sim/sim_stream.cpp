#include "gpu/sim/sim_stream.h"

#include <utility>

namespace tandem {

SimStream::SimStream(std::string name) : name_(std::move(name)), worker_([this] { run(); }) {}

SimStream::~SimStream() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  worker_.join();
}

void SimStream::enqueue(Op op) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    queue_.push_back(std::move(op));
  }
  work_cv_.notify_one();
}

void SimStream::drain() {
  std::unique_lock<std::mutex> lock(mutex_);
  idle_cv_.wait(lock, [this] { return queue_.empty() && !busy_; });
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

double SimStream::clock_us() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return clock_us_;
}

void SimStream::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    work_cv_.wait(lock, [this] { return stop_ || !queue_.empty(); });
    if (queue_.empty()) return;  // stop_ with nothing left to do
    Op op = std::move(queue_.front());
    queue_.pop_front();
    busy_ = true;
    double clock = clock_us_;
    lock.unlock();
    std::exception_ptr failure;
    try {
      op(clock);
    } catch (...) {
      failure = std::current_exception();
    }
    lock.lock();
    clock_us_ = clock;
    if (failure && !error_) error_ = failure;
    busy_ = false;
    if (queue_.empty()) idle_cv_.notify_all();
  }
}

}  // namespace tandem
