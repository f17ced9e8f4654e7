// CpuArena::HotTeam: parallel calls made while a team lives run every part once, on the
// team's threads, nest, pass exceptions on, and leave the arena usable as before.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <future>
#include <mutex>
#include <set>
#include <stdexcept>
#include <thread>
#include <vector>

#include <gtest/gtest.h>
#include <tbb/global_control.h>

#include "cpu/arena.h"

namespace tandem {
namespace {

// The distinct threads that ran the chunks of a few parallel calls.
std::set<std::thread::id> threads_of_calls(CpuArena& arena, int calls) {
  std::mutex mutex;
  std::set<std::thread::id> ids;
  const std::vector<int64_t> shares = {0, 8, 16};
  for (int i = 0; i < calls; ++i) {
    arena.parallel_chunks(shares, [&](int64_t) {
      // Long enough that one thread cannot take every chunk before the other starts.
      std::this_thread::sleep_for(std::chrono::microseconds(200));
      const std::lock_guard<std::mutex> lock(mutex);
      ids.insert(std::this_thread::get_id());
    });
  }
  return ids;
}

TEST(ArenaHotTeam, CallsRunEveryPartOnceOnTheTeamsThreads) {
  CpuArena arena(2);
  const CpuArena::HotTeam team(arena);
  for (int round = 0; round < 50; ++round) {
    std::vector<std::atomic<int>> hits(257);
    arena.parallel_for(0, 257, 3, [&](int64_t lo, int64_t hi) {
      EXPECT_LE(hi - lo, 3);
      for (int64_t i = lo; i < hi; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < 257; ++i) ASSERT_EQ(hits[i].load(), 1) << i << " round " << round;
    const std::vector<int64_t> shares = {0, 5, 11};
    std::vector<std::atomic<int>> chunk_hits(11);
    arena.parallel_chunks(shares, [&](int64_t c) { chunk_hits[c].fetch_add(1); });
    for (int64_t c = 0; c < 11; ++c) ASSERT_EQ(chunk_hits[c].load(), 1) << c;
  }
  // The member joined (the constructor waits for it briefly; on a loaded machine it may come
  // later, so give it a few calls): both threads take chunks.
  std::set<std::thread::id> ids;
  for (int attempt = 0; attempt < 20 && ids.size() < 2; ++attempt) ids = threads_of_calls(arena, 4);
  EXPECT_EQ(ids.size(), 2u);
}

TEST(ArenaHotTeam, NestedCallsRunAndEveryThreadCountWorks) {
  for (int threads : {1, 2, 3, 4}) {
    CpuArena arena(threads);
    const CpuArena::HotTeam team(arena);
    std::vector<std::atomic<int>> hits(40 * 40);
    arena.parallel_for(0, 40, 1, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        arena.parallel_for(0, 40, 7, [&](int64_t l2, int64_t h2) {
          for (int64_t j = l2; j < h2; ++j) hits[i * 40 + j].fetch_add(1);
        });
      }
    });
    for (size_t i = 0; i < hits.size(); ++i) ASSERT_EQ(hits[i].load(), 1) << i << ", " << threads;
  }
}

TEST(ArenaHotTeam, ExceptionsOfAnyPartReachTheCaller) {
  CpuArena arena(2);
  const CpuArena::HotTeam team(arena);
  for (int thrower : {0, 1}) {
    const std::vector<int64_t> shares = {0, 1, 2};
    EXPECT_THROW(arena.parallel_chunks(shares,
                                       [&](int64_t c) {
                                         std::this_thread::sleep_for(std::chrono::milliseconds(2));
                                         if (c == thrower) throw std::runtime_error("chunk failed");
                                       }),
                 std::runtime_error);
  }
  // The team still works after a failed call.
  std::atomic<int> sum{0};
  arena.parallel_for(0, 100, 10, [&](int64_t lo, int64_t hi) { sum += static_cast<int>(hi - lo); });
  EXPECT_EQ(sum.load(), 100);
}

TEST(ArenaHotTeam, OtherThreadsAndLaterTeamsAreServedAsWithout) {
  CpuArena arena(2);
  {
    const CpuArena::HotTeam team(arena);
    const CpuArena::HotTeam second(arena);  // does nothing while the first lives
    // A call from another thread does not go to this thread's team.
    auto other = std::async(std::launch::async, [&] {
      std::atomic<int> n{0};
      arena.parallel_for(0, 64, 4, [&](int64_t lo, int64_t hi) { n += static_cast<int>(hi - lo); });
      return n.load();
    });
    std::atomic<int> here{0};
    arena.parallel_for(0, 64, 4,
                       [&](int64_t lo, int64_t hi) { here += static_cast<int>(hi - lo); });
    EXPECT_EQ(here.load(), 64);
    EXPECT_EQ(other.get(), 64);
  }
  // Teams come and go (a decode step each); the arena keeps working without one too.
  for (int step = 0; step < 200; ++step) {
    const CpuArena::HotTeam team(arena);
    std::atomic<int> n{0};
    arena.parallel_for(0, 10, 1, [&](int64_t lo, int64_t hi) { n += static_cast<int>(hi - lo); });
    ASSERT_EQ(n.load(), 10) << step;
  }
  std::atomic<int> n{0};
  arena.parallel_for(0, 10, 1, [&](int64_t lo, int64_t hi) { n += static_cast<int>(hi - lo); });
  EXPECT_EQ(n.load(), 10);
}

TEST(ArenaHotTeam, WaitsOnlyForMembersTbbHasWorkersFor) {
  // With 2 threads allowed in all, TBB has one worker: a 4-thread arena's team must not wait
  // for three members at every step (it did, 2 ms each time, with `-t 4` on a 2-core machine).
  const tbb::global_control limit(tbb::global_control::max_allowed_parallelism, 2);
  CpuArena arena(4);
#if defined(__SANITIZE_THREAD__)
  EXPECT_EQ(arena.team_members_expected(), 3);  // plain threads there: all of them come
#else
  EXPECT_EQ(arena.team_members_expected(), 1);
#endif
  // An engine asking for more threads than TBB allows runs as many as it allows.
  EXPECT_EQ(usable_thread_count(4), 2);
  EXPECT_EQ(usable_thread_count(1), 1);
  EXPECT_EQ(usable_thread_count(0), std::min(physical_core_count(), 2));
  CpuArena small(2);
  EXPECT_EQ(small.team_members_expected(), 1);
  CpuArena single(1);
  EXPECT_EQ(single.team_members_expected(), 0);
  for (int step = 0; step < 20; ++step) {
    const CpuArena::HotTeam team(arena);
    std::vector<std::atomic<int>> hits(64);
    arena.parallel_for(0, 64, 3, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) hits[i].fetch_add(1);
    });
    for (int64_t i = 0; i < 64; ++i) ASSERT_EQ(hits[i].load(), 1) << i << " step " << step;
  }
}

TEST(ArenaHotTeam, ArenaCanGoRightAfterItsTeam) {
  for (int i = 0; i < 50; ++i) {
    CpuArena arena(4);  // more threads than this machine may have: members may never join
    const CpuArena::HotTeam team(arena);
    std::atomic<int> n{0};
    arena.parallel_for(0, 8, 1, [&](int64_t lo, int64_t hi) { n += static_cast<int>(hi - lo); });
    ASSERT_EQ(n.load(), 8);
  }
}

}  // namespace
}  // namespace tandem
