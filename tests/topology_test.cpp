// The machine's layout: arena threads spread over the cores, weights interleaved over NUMA
// nodes when there are several (synthetic topologies stand in for machines this one is not).
#include <cstring>
#include <set>
#include <vector>

#include <gtest/gtest.h>

#include "cpu/topology.h"

namespace tandem {
namespace {

TEST(Topology, ThreadsSpreadEvenlyOverTheCores) {
  EXPECT_EQ(core_for_thread(0, 2, 16), 0);
  EXPECT_EQ(core_for_thread(1, 2, 16), 8);  // the second package of a 2 x 8-core machine
  for (int slot = 0; slot < 4; ++slot) EXPECT_EQ(core_for_thread(slot, 4, 16), 4 * slot);
  for (int slot = 0; slot < 16; ++slot) EXPECT_EQ(core_for_thread(slot, 16, 16), slot);
  for (int n_threads = 1; n_threads <= 12; ++n_threads) {
    std::set<int> cores;
    for (int slot = 0; slot < n_threads; ++slot) {
      const int core = core_for_thread(slot, n_threads, 12);
      ASSERT_GE(core, 0);
      ASSERT_LT(core, 12);
      cores.insert(core);
    }
    EXPECT_EQ(cores.size(), static_cast<size_t>(n_threads)) << n_threads << " threads";
  }
  // More threads than cores take turns on them; no cores information pins nothing useful.
  EXPECT_EQ(core_for_thread(2, 3, 2), 0);
  EXPECT_EQ(core_for_thread(3, 8, 0), 0);
}

TEST(Topology, SeveralNumaNodesWantTheWeightsInterleaved) {
  const Topology two_nodes("node:2 core:4 pu:1");
  EXPECT_EQ(two_nodes.n_numa_nodes(), 2);
  EXPECT_EQ(two_nodes.n_cores(), 8);
  EXPECT_TRUE(weights_want_interleaving(two_nodes));
  const Topology one_node("core:2 pu:1");
  EXPECT_EQ(one_node.n_numa_nodes(), 1);
  EXPECT_FALSE(weights_want_interleaving(one_node));
  const Topology bad("not a topology");
  EXPECT_EQ(bad.n_cores(), 0);
  EXPECT_EQ(bad.n_numa_nodes(), 1);
}

TEST(Topology, InterleavingHereLeavesTheMemoryUsable) {
  const Topology here;
  std::vector<unsigned char> bytes(8 << 20);
  const int nodes = interleave_over_numa_nodes(here, bytes.data(), bytes.size());
  // One node here (the development VM): nothing to do. Several: all of them, or 0 if refused.
  if (here.n_numa_nodes() == 1) {
    EXPECT_EQ(nodes, 0);
  } else {
    EXPECT_TRUE(nodes == 0 || nodes == here.n_numa_nodes()) << nodes;
  }
  std::memset(bytes.data(), 0x5a, bytes.size());
  EXPECT_EQ(bytes.front(), 0x5a);
  EXPECT_EQ(bytes.back(), 0x5a);
}

}  // namespace
}  // namespace tandem
