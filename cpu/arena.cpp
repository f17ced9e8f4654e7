#include "cpu/arena.h"

#include <hwloc.h>

#include <stdexcept>
#include <string>
#include <thread>

#include <tbb/task_scheduler_observer.h>

namespace tandem {

namespace {

// Owns an hwloc topology for the arena's lifetime.
struct Topology {
  hwloc_topology_t topo = nullptr;
  Topology() {
    if (hwloc_topology_init(&topo) != 0) {
      topo = nullptr;
      return;
    }
    if (hwloc_topology_load(topo) != 0) {
      hwloc_topology_destroy(topo);
      topo = nullptr;
    }
  }
  ~Topology() {
    if (topo) hwloc_topology_destroy(topo);
  }
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;
  int n_cores() const { return topo ? hwloc_get_nbobjs_by_type(topo, HWLOC_OBJ_CORE) : 0; }
};

}  // namespace

int physical_core_count() {
  const Topology t;
  if (t.n_cores() > 0) return t.n_cores();
  const unsigned hw = std::thread::hardware_concurrency();
  return hw > 0 ? static_cast<int>(hw) : 1;
}

// Pins each thread that enters the arena to core (slot index mod cores). The thread calling
// parallel_for (slot 0 when it is not a TBB worker) is left alone: it belongs to the caller.
class CorePinner : public tbb::task_scheduler_observer {
 public:
  explicit CorePinner(tbb::task_arena& arena) : tbb::task_scheduler_observer(arena) {
    if (topology_.n_cores() > 0) observe(true);
  }
  ~CorePinner() override { observe(false); }

  void on_scheduler_entry(bool is_worker) override {
    if (!is_worker) return;
    const int slot = tbb::this_task_arena::current_thread_index();
    const int n_cores = topology_.n_cores();
    if (slot < 0 || n_cores <= 0) return;
    hwloc_obj_t core = hwloc_get_obj_by_type(topology_.topo, HWLOC_OBJ_CORE,
                                             static_cast<unsigned>(slot % n_cores));
    if (!core || !core->cpuset) return;
    // Failure (e.g. a restricted cpuset in a container) only costs locality, not correctness.
    (void)hwloc_set_cpubind(topology_.topo, core->cpuset, HWLOC_CPUBIND_THREAD);
  }

 private:
  Topology topology_;
};

CpuArena::CpuArena(int n_threads) {
  if (n_threads < 0) {
    throw std::invalid_argument("CpuArena: thread count must be >= 0, got " +
                                std::to_string(n_threads));
  }
  n_threads_ = n_threads == 0 ? physical_core_count() : n_threads;
  arena_ = std::make_unique<tbb::task_arena>(n_threads_, 1);
  arena_->initialize();
  pinner_ = std::make_unique<CorePinner>(*arena_);
}

CpuArena::~CpuArena() {
  pinner_.reset();
  arena_.reset();
}

int CpuArena::thread_index() {
  return tbb::this_task_arena::current_thread_index();
}

}  // namespace tandem
