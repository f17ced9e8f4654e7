#include "cpu/topology.h"

namespace tandem {

Topology::Topology() : Topology(nullptr) {}

Topology::Topology(const char* synthetic) {
  if (hwloc_topology_init(&topo_) != 0) {
    topo_ = nullptr;
    return;
  }
  if ((synthetic && hwloc_topology_set_synthetic(topo_, synthetic) != 0) ||
      hwloc_topology_load(topo_) != 0) {
    hwloc_topology_destroy(topo_);
    topo_ = nullptr;
  }
}

Topology::~Topology() {
  if (topo_) hwloc_topology_destroy(topo_);
}

int Topology::n_cores() const {
  return topo_ ? hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_CORE) : 0;
}

int Topology::n_numa_nodes() const {
  const int n = topo_ ? hwloc_get_nbobjs_by_type(topo_, HWLOC_OBJ_NUMANODE) : 0;
  return n > 0 ? n : 1;
}

int core_for_thread(int slot, int n_threads, int n_cores) {
  if (n_cores <= 0 || slot < 0) return 0;
  if (n_threads <= n_cores) {
    return static_cast<int>(static_cast<long long>(slot) * n_cores / n_threads);
  }
  return slot % n_cores;
}

bool weights_want_interleaving(const Topology& topology) {
  return topology.n_numa_nodes() > 1;
}

int interleave_over_numa_nodes(const Topology& topology, void* data, size_t bytes) {
  if (!weights_want_interleaving(topology) || bytes == 0) return 0;
  const hwloc_const_nodeset_t nodes = hwloc_topology_get_topology_nodeset(topology.get());
  if (hwloc_set_area_membind(topology.get(), data, bytes, nodes, HWLOC_MEMBIND_INTERLEAVE,
                             HWLOC_MEMBIND_BYNODESET) != 0)
    return 0;
  return topology.n_numa_nodes();
}

}  // namespace tandem
