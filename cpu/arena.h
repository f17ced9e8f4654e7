// The engine's CPU thread pool: one TBB arena with a fixed number of threads, worker threads
// pinned to physical cores with hwloc. Threads are created once; parallel_for only posts tasks.
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <memory>
#include <span>
#include <thread>
#include <type_traits>
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

  // How many of the arena's other threads a HotTeam waits for when it starts: n_threads - 1,
  // or fewer when TBB has fewer workers than that (more threads asked for than it allows).
  int team_members_expected() const;

  // While a HotTeam lives, the arena's other threads wait for the parallel calls of the thread
  // that made it in a spin loop (one task each, from the arena) instead of going back to TBB's
  // scheduler, which puts a worker to sleep between calls: a decode step makes ~100 short
  // parallel calls, and waking a sleeping worker cost 4-9 us per call here. Calls from other
  // threads, and calls nested in a call, run as they would without a team. One team per arena
  // at a time; a second one (or one on a single-thread arena) does nothing.
  class HotTeam {
   public:
    explicit HotTeam(CpuArena& arena);
    ~HotTeam();
    HotTeam(const HotTeam&) = delete;
    HotTeam& operator=(const HotTeam&) = delete;

   private:
    CpuArena* arena_ = nullptr;  // null when this team does nothing
  };

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
#if !defined(__SANITIZE_THREAD__)
    if (!team_serves_caller()) {
      arena_->execute([&] {
        tbb::parallel_for(
            tbb::blocked_range<int64_t>(begin, end, static_cast<size_t>(grain)),
            [&](const tbb::blocked_range<int64_t>& r) { f(r.begin(), r.end()); },
            tbb::simple_partitioner());
      });
      return;
    }
#endif
    // Same chunks, taken from a shared counter by run_workers' team or plain threads.
    const int64_t n_chunks = (end - begin + grain - 1) / grain;
    std::atomic<int64_t> next{0};
    run_workers(static_cast<int>(std::min<int64_t>(n_threads_, n_chunks)), [&](int) {
      for (int64_t c = next.fetch_add(1); c < n_chunks; c = next.fetch_add(1)) {
        const int64_t lo = begin + c * grain;
        f(lo, lo + grain < end ? lo + grain : end);
      }
    });
  }

  // Runs f(c) for every chunk c in [0, share_first.back()) and returns when all are done.
  // Worker w owns the chunks [share_first[w], share_first[w + 1]) and takes them front to back
  // (one stream per thread); with its own gone, it takes the others' last chunks. A caller that
  // makes a share's last chunks small gets workers that finish close together.
  template <class F>
  void parallel_chunks(std::span<const int64_t> share_first, F&& f) {
    const int64_t n_chunks = share_first.back();
    if (n_chunks <= 0) return;
    const int n_workers = static_cast<int>(share_first.size()) - 1;
    if (n_workers == 1) {
      for (int64_t c = 0; c < n_chunks; ++c) f(c);
      return;
    }
    ChunkShares shares(share_first);
    run_workers(n_workers, [&](int w) {
      for (int64_t c = shares.take(w); c >= 0; c = shares.take(w)) f(c);
    });
  }

 private:
  // Per-worker ranges of chunk indices; each range's [lo, hi) is one atomic word so the owner
  // (taking lo) and a thief (taking hi - 1) never both get a chunk.
  class ChunkShares {
   public:
    explicit ChunkShares(std::span<const int64_t> first) : ranges_(first.size() - 1) {
      for (size_t w = 0; w + 1 < first.size(); ++w) {
        const auto lo = static_cast<uint64_t>(first[w]), hi = static_cast<uint64_t>(first[w + 1]);
        ranges_[w].bounds.store(lo << 32 | hi, std::memory_order_relaxed);
      }
    }
    // Worker w's next chunk, or -1 when none is left anywhere.
    int64_t take(int w) {
      if (const int64_t c = take_front(ranges_[w]); c >= 0) return c;
      const int n = static_cast<int>(ranges_.size());
      for (int i = 1; i < n; ++i) {
        if (const int64_t c = take_back(ranges_[(w + i) % n]); c >= 0) return c;
      }
      return -1;
    }

   private:
    struct alignas(64) Range {
      std::atomic<uint64_t> bounds{0};  // lo in the high half, hi in the low half
    };
    static int64_t take_front(Range& r) {
      uint64_t b = r.bounds.load(std::memory_order_relaxed);
      while ((b >> 32) < (b & 0xffffffffu)) {
        if (r.bounds.compare_exchange_weak(b, b + (uint64_t{1} << 32), std::memory_order_relaxed))
          return static_cast<int64_t>(b >> 32);
      }
      return -1;
    }
    static int64_t take_back(Range& r) {
      uint64_t b = r.bounds.load(std::memory_order_relaxed);
      while ((b >> 32) < (b & 0xffffffffu)) {
        if (r.bounds.compare_exchange_weak(b, b - 1, std::memory_order_relaxed))
          return static_cast<int64_t>(b & 0xffffffffu) - 1;
      }
      return -1;
    }
    std::vector<Range> ranges_;
  };

  // Calls worker(w) for w in [0, n) on the arena's threads (a thread may run several).
  template <class Worker>
  void run_workers(int n, Worker&& worker) {
    using W = std::remove_reference_t<Worker>;
    if (run_on_team(
            n, [](void* w, int i) { (*static_cast<W*>(w))(i); }, &worker))
      return;
#if defined(__SANITIZE_THREAD__)
    // Debian's libtbb is not built with ThreadSanitizer, so the hand-off of a task between
    // TBB threads is invisible to it and every parallel loop would be reported as a race.
    // Sanitizer builds fork and join plain std::threads instead: synchronisation TSan can
    // see, so races in the callers' code are still found.
    std::vector<std::thread> helpers;
    for (int w = 1; w < n; ++w) helpers.emplace_back([&worker, w] { worker(w); });
    worker(0);
    for (std::thread& t : helpers) t.join();
#else
    arena_->execute([&] {
      tbb::parallel_for(
          0, n, 1, [&](int w) { worker(w); }, tbb::simple_partitioner());
    });
#endif
  }

  // The hot team (see HotTeam): whether it would take a parallel call made now, and the call.
  bool team_serves_caller() const;
  bool run_on_team(int n, void (*worker)(void*, int), void* context);
  struct Team;
  void team_member(uint64_t epoch);

  int n_threads_ = 1;
  std::unique_ptr<Team> team_;
  std::unique_ptr<tbb::task_arena> arena_;
  std::unique_ptr<CorePinner> pinner_;
};

// Physical cores of this machine (hwloc), at least 1.
int physical_core_count();

// The threads an engine that asks for `requested` (0: one per physical core) gets: at most as
// many as TBB lets this process run at once (the CPUs of its affinity mask). More would only
// queue for the same cores, where a hot team's spinning threads (CpuArena::HotTeam) would take
// turns with the ones doing the work.
int usable_thread_count(int requested);

}  // namespace tandem
