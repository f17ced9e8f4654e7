// The engine's CPU thread pool: one TBB arena with a fixed number of threads, worker threads
// pinned to physical cores with hwloc. Threads are created once; parallel_for only posts tasks.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <thread>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

namespace tandem {

class CorePinner;

class CpuArena {
 public:
  // n_threads = 0 means one thread per physical core (hwloc), else the given count (>= 1).
  // Pinning is best effort: without hwloc information threads float.
  explicit CpuArena(int n_threads = 0);
  ~CpuArena();
  CpuArena(const CpuArena&) = delete;
  CpuArena& operator=(const CpuArena&) = delete;

  int n_threads() const { return n_threads_; }
  // Index of the calling thread inside the arena (0..n_threads-1), or -1 outside it.
  static int thread_index();

  // Runs f(lo, hi) over [begin, end) in chunks of at most `grain` elements (>= 1) on the
  // arena's threads and returns when all are done. Chunk boundaries depend only on the
  // arguments, so per-element results are deterministic.
  template <class F>
  void parallel_for(int64_t begin, int64_t end, int64_t grain, F&& f) {
    if (end <= begin) return;
    if (grain < 1) grain = 1;
    if (n_threads_ == 1 || end - begin <= grain) {
      for (int64_t lo = begin; lo < end; lo += grain) f(lo, lo + grain < end ? lo + grain : end);
      return;
    }
#if defined(__SANITIZE_THREAD__)
    // Debian's libtbb is not built with ThreadSanitizer, so the hand-off of a task between
    // TBB threads is invisible to it and every parallel_for would be reported as a race.
    // Sanitizer builds fork and join plain std::threads instead: same chunks, synchronisation
    // TSan can see, so races in the callers' code are still found.
    const int64_t n_chunks = (end - begin + grain - 1) / grain;
    std::atomic<int64_t> next{0};
    auto run_chunks = [&] {
      for (int64_t c = next.fetch_add(1); c < n_chunks; c = next.fetch_add(1)) {
        const int64_t lo = begin + c * grain;
        f(lo, lo + grain < end ? lo + grain : end);
      }
    };
    std::vector<std::thread> helpers;
    const int64_t n_helpers = std::min<int64_t>(n_threads_, n_chunks) - 1;
    for (int64_t i = 0; i < n_helpers; ++i) helpers.emplace_back(run_chunks);
    run_chunks();
    for (std::thread& t : helpers) t.join();
    return;
#endif
    arena_->execute([&] {
      tbb::parallel_for(
          tbb::blocked_range<int64_t>(begin, end, static_cast<size_t>(grain)),
          [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); },
          tbb::simple_partitioner());
    });
  }

 private:
  int n_threads_ = 1;
  std::unique_ptr<tbb::task_arena> arena_;
  std::unique_ptr<CorePinner> pinner_;
};

// Physical cores of this machine (hwloc), at least 1.
int physical_core_count();

}  // namespace tandem
