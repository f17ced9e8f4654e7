#include "cpu/arena.h"

#include <hwloc.h>

#include <algorithm>
#include <chrono>
#include <exception>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include <immintrin.h>

#include <tbb/global_control.h>
#include <tbb/task_scheduler_observer.h>

#include "cpu/topology.h"

namespace tandem {

int physical_core_count() {
  const Topology t;
  if (t.n_cores() > 0) return t.n_cores();
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// Pins each thread that enters the arena to a core (core_for_thread: spread over the machine).
// The thread calling parallel_for (slot 0 when it is not a TBB worker) is left alone: it
// belongs to the caller.
class CorePinner : public tbb::task_scheduler_observer {
 public:
  CorePinner(tbb::task_arena& arena, int n_threads)
      : tbb::task_scheduler_observer(arena), n_threads_(n_threads) {
    if (topology_.n_cores() > 0) observe(true);
  }
  ~CorePinner() override { observe(false); }

  void on_scheduler_entry(bool is_worker) override {
    if (!is_worker) return;
    const int slot = tbb::this_task_arena::current_thread_index();
    const int n_cores = topology_.n_cores();
    if (slot < 0 || n_cores <= 0) return;
    hwloc_obj_t core =
        hwloc_get_obj_by_type(topology_.get(), HWLOC_OBJ_CORE,
                              static_cast<unsigned>(core_for_thread(slot, n_threads_, n_cores)));
    if (!core || !core->cpuset) return;
    // Failure (e.g. a restricted cpuset in a container) only costs locality, not correctness.
    (void)hwloc_set_cpubind(topology_.get(), core->cpuset, HWLOC_CPUBIND_THREAD);
  }

 private:
  Topology topology_;
  int n_threads_;
};

// One member's slot of the hot team, on its own cache line: the owner posts a job by storing
// its number in `posted`, the member answers in `done`. The job itself (worker, context) is
// written before `posted` and read after it, so a store-release / load-acquire pair hands it over.
struct alignas(64) TeamMailbox {
  std::atomic<uint64_t> posted{0};
  std::atomic<uint64_t> done{0};
  std::exception_ptr error;  // what the member's part threw, read by the owner after `done`
};

struct CpuArena::Team {
  // epoch << 32 | stopped << 31 | members: a member joins with one compare-exchange that fails
  // once the team it was started for has stopped, so a late task never joins a later team.
  static constexpr uint64_t kStopped = uint64_t{1} << 31;
  static constexpr uint64_t kMembersMask = kStopped - 1;
  std::atomic<uint64_t> state{0};
  std::atomic<int> running{0};     // member loops between joining (or trying to) and leaving
  std::atomic<int> unfinished{0};  // member tasks started or queued, not yet returned
  std::vector<TeamMailbox> boxes;  // [n_threads]; member m uses boxes[m], m >= 1
  // The thread whose calls the team takes (none while no team lives); other threads read it.
  std::atomic<std::thread::id> owner{};
  // Whether the owner is inside a call (its nested calls run as without a team); atomic only
  // because other threads' checks may read it.
  std::atomic<bool> in_call{false};
  // Written and read only by the owner thread.
  uint64_t epoch = 0;
  uint64_t job = 0;
  void (*worker)(void*, int) = nullptr;
  void* context = nullptr;
#if defined(__SANITIZE_THREAD__)
  std::vector<std::thread> threads;  // ThreadSanitizer builds: plain threads (see run_workers)
#endif
  explicit Team(int n_threads) : boxes(static_cast<size_t>(n_threads)) {}
};

void CpuArena::team_member(uint64_t epoch) {
  Team& t = *team_;
  t.running.fetch_add(1, std::memory_order_acq_rel);
  uint64_t s = t.state.load(std::memory_order_acquire);
  int id = 0;
  while ((s >> 32) == epoch && !(s & Team::kStopped) &&
         static_cast<size_t>(s & Team::kMembersMask) + 1 < t.boxes.size()) {
    if (t.state.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) {
      id = static_cast<int>(s & Team::kMembersMask) + 1;
      break;
    }
  }
  if (id > 0) {
    TeamMailbox& box = t.boxes[static_cast<size_t>(id)];
    uint64_t seen = box.done.load(std::memory_order_acquire);
    for (;;) {
      const uint64_t posted = box.posted.load(std::memory_order_acquire);
      if (posted != seen) {
        try {
          t.worker(t.context, id);
        } catch (...) {
          box.error = std::current_exception();
        }
        seen = posted;
        box.done.store(posted, std::memory_order_release);
        continue;
      }
      if (t.state.load(std::memory_order_acquire) & Team::kStopped) break;
      _mm_pause();
    }
  }
  t.running.fetch_sub(1, std::memory_order_acq_rel);
}

bool CpuArena::team_serves_caller() const {
  return team_->owner.load(std::memory_order_relaxed) == std::this_thread::get_id() &&
         !team_->in_call.load(std::memory_order_relaxed);
}

bool CpuArena::run_on_team(int n, void (*worker)(void*, int), void* context) {
  if (!team_serves_caller()) return false;
  Team& t = *team_;
  const int joined = static_cast<int>(t.state.load(std::memory_order_acquire) & Team::kMembersMask);
  const int members = std::min(joined, n - 1);
  t.worker = worker;
  t.context = context;
  const uint64_t job = ++t.job;
  for (int m = 1; m <= members; ++m) t.boxes[m].posted.store(job, std::memory_order_release);
  // Parts no member has joined for run here, after the owner's own.
  std::exception_ptr error;
  t.in_call.store(true, std::memory_order_relaxed);
  try {
    for (int w = 0; w < n; ++w) {
      if (w == 0 || w > members) worker(context, w);
    }
  } catch (...) {
    error = std::current_exception();
  }
  t.in_call.store(false, std::memory_order_relaxed);
  for (int m = 1; m <= members; ++m) {
    TeamMailbox& box = t.boxes[m];
    while (box.done.load(std::memory_order_acquire) != job) _mm_pause();
    if (box.error && !error) error = box.error;
    box.error = nullptr;
  }
  if (error) std::rethrow_exception(error);
  return true;
}

CpuArena::HotTeam::HotTeam(CpuArena& arena) {
  Team& t = *arena.team_;
  std::thread::id none;
  if (arena.n_threads_ == 1 ||
      !t.owner.compare_exchange_strong(none, std::this_thread::get_id(), std::memory_order_acq_rel))
    return;
  arena_ = &arena;
  const uint64_t epoch = ++t.epoch;
  t.state.store(epoch << 32, std::memory_order_release);
  for (int m = 1; m < arena.n_threads_; ++m) {
    t.unfinished.fetch_add(1, std::memory_order_acq_rel);
    auto member = [&arena, epoch] {
      arena.team_member(epoch);
      arena.team_->unfinished.fetch_sub(1, std::memory_order_acq_rel);
    };
#if defined(__SANITIZE_THREAD__)
    t.threads.emplace_back(member);
#else
    arena.arena_->enqueue(member);
#endif
  }
  // The members' tasks start when a worker wakes up: wait for them briefly, so that the first
  // calls do not run on this thread alone. Workers that come later join at the next call;
  // members TBB has no worker for never come, so they are not waited for.
  const int expected = arena.team_members_expected();
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(2);
  while (static_cast<int>(t.state.load(std::memory_order_acquire) & Team::kMembersMask) <
             expected &&
         std::chrono::steady_clock::now() < deadline) {
    _mm_pause();
  }
}

CpuArena::HotTeam::~HotTeam() {
  if (!arena_) return;
  Team& t = *arena_->team_;
  t.state.fetch_or(Team::kStopped, std::memory_order_acq_rel);
  while (t.running.load(std::memory_order_acquire) > 0) _mm_pause();
#if defined(__SANITIZE_THREAD__)
  for (std::thread& th : t.threads) th.join();
  t.threads.clear();
#endif
  t.owner.store(std::thread::id(), std::memory_order_release);
}

namespace {

int tbb_allowed_parallelism() {
  return static_cast<int>(std::max<size_t>(
      1, tbb::global_control::active_value(tbb::global_control::max_allowed_parallelism)));
}

}  // namespace

int usable_thread_count(int requested) {
  const int wanted = requested > 0 ? requested : physical_core_count();
  return std::min(wanted, tbb_allowed_parallelism());
}

int CpuArena::team_members_expected() const {
#if defined(__SANITIZE_THREAD__)
  return n_threads_ - 1;  // members are plain threads there: all of them come
#else
  // TBB keeps max_allowed_parallelism - 1 workers for all arenas; the caller is the last thread.
  return std::clamp(tbb_allowed_parallelism() - 1, 0, n_threads_ - 1);
#endif
}

CpuArena::CpuArena(int n_threads) {
  if (n_threads < 0) {
    throw std::invalid_argument("CpuArena: thread count must be >= 0, got " +
                                std::to_string(n_threads));
  }
  n_threads_ = n_threads == 0 ? physical_core_count() : n_threads;
  team_ = std::make_unique<Team>(n_threads_);
  arena_ = std::make_unique<tbb::task_arena>(n_threads_, 1);
  arena_->initialize();
  pinner_ = std::make_unique<CorePinner>(*arena_, n_threads_);
}

CpuArena::~CpuArena() {
  // A member task queued for a team that has stopped still runs (and leaves at once); it must
  // not find the arena gone.
  while (team_->unfinished.load(std::memory_order_acquire) > 0) std::this_thread::yield();
  pinner_.reset();
  arena_.reset();
}

int CpuArena::thread_index() {
  return tbb::this_task_arena::current_thread_index();
}

}  // namespace tandem
