// Measures this machine's DRAM read bandwidth: the roofline that decode speed is judged by.
#pragma once

#include <cstdint>

namespace tandem {

class CpuArena;

// Best-of-`reps` read bandwidth in GB/s (1e9 bytes/s) over a buffer of `bytes`, read by every
// thread of the arena (or one thread when null). The buffer should dwarf the caches.
double measure_read_bandwidth(CpuArena* arena, uint64_t bytes = uint64_t{1} << 30, int reps = 5);

}  // namespace tandem
