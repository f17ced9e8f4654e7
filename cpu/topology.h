// The machine's layout as hwloc sees it: physical cores for pinning the arena's threads, NUMA
// nodes for placing the weights.
#pragma once

#include <hwloc.h>

#include <cstddef>

namespace tandem {

// An hwloc topology, loaded once: this machine's, or a synthetic one such as
// "node:2 core:4 pu:1" (tests; hwloc's synthetic syntax). Without hwloc information (init or
// load failed) it reports no cores and one node.
class Topology {
 public:
  Topology();
  explicit Topology(const char* synthetic);
  ~Topology();
  Topology(const Topology&) = delete;
  Topology& operator=(const Topology&) = delete;

  hwloc_topology_t get() const { return topo_; }
  int n_cores() const;
  int n_numa_nodes() const;

 private:
  hwloc_topology_t topo_ = nullptr;
};

// The core (index in hwloc's order: package, then die / cache group, then core) that arena
// thread `slot` of `n_threads` is pinned to among `n_cores`. Fewer threads than cores are spread
// evenly over the machine rather than packed on its first cores: decode is bound by reading
// the weights, and every package, die and NUMA node brings its own path to memory.
int core_for_thread(int slot, int n_threads, int n_cores);

// Whether the weights read into memory should be interleaved over the NUMA nodes: when there
// are several. Every thread reads a share of every product, so each node's memory controllers
// best serve an equal part of every matrix (what `numactl --interleave=all` does).
bool weights_want_interleaving(const Topology& topology);

// Sets an interleaving policy over all NUMA nodes on [data, data + bytes), for pages not yet
// touched, when weights_want_interleaving says so; returns the number of nodes, or 0 when
// there is one node or the system refused (placement only affects speed).
int interleave_over_numa_nodes(const Topology& topology, void* data, size_t bytes);

}  // namespace tandem
