#include "engine/side_thread.h"

#include <stdexcept>
#include <utility>

namespace tandem {

SideThread::~SideThread() {
  {
    std::unique_lock<std::mutex> lock(mutex_);
    wait_done(lock);
    stop_ = true;
  }
  wake_.notify_one();
  if (thread_.joinable()) thread_.join();
}

void SideThread::run(std::function<void()> task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (has_task_) throw std::logic_error("SideThread::run: the previous task was not joined");
    task_ = std::move(task);
    has_task_ = true;
    error_ = nullptr;
    if (!thread_.joinable()) thread_ = std::thread([this] { loop(); });
  }
  wake_.notify_one();
}

void SideThread::join() {
  std::unique_lock<std::mutex> lock(mutex_);
  wait_done(lock);
  if (error_) std::rethrow_exception(std::exchange(error_, nullptr));
}

void SideThread::join_quietly() noexcept {
  std::unique_lock<std::mutex> lock(mutex_);
  wait_done(lock);
  error_ = nullptr;
}

void SideThread::wait_done(std::unique_lock<std::mutex>& lock) {
  done_cv_.wait(lock, [this] { return !has_task_; });
}

void SideThread::loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  for (;;) {
    wake_.wait(lock, [this] { return has_task_ || stop_; });
    if (!has_task_) return;  // stop_ with nothing left to run
    std::function<void()> task = std::move(task_);
    lock.unlock();
    std::exception_ptr error;
    try {
      task();
    } catch (...) {
      error = std::current_exception();
    }
    lock.lock();
    error_ = error;
    has_task_ = false;
    done_cv_.notify_all();
  }
}

}  // namespace tandem
