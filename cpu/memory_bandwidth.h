// Measures this machine's DRAM read bandwidth: the roofline that decode speed is judged by.
#pragma once

#include <cstdint>
#include <span>

namespace tandem {

class CpuArena;

// A buffer of `bytes` (it should dwarf the caches), touched once by the threads of the arena
// that will read it (or one thread when null), kept so the bandwidth can be measured again
// next to each measurement it judges (on a shared machine it drifts from minute to minute).
class ReadBandwidthProbe {
 public:
  explicit ReadBandwidthProbe(CpuArena* arena, uint64_t bytes = uint64_t{1} << 30);
  ~ReadBandwidthProbe();
  ReadBandwidthProbe(const ReadBandwidthProbe&) = delete;
  ReadBandwidthProbe& operator=(const ReadBandwidthProbe&) = delete;

  // Best-of-`reps` read bandwidth in GB/s (1e9 bytes/s), the buffer read by every thread.
  double measure(int reps = 5);

 private:
  CpuArena* arena_;
  uint64_t* words_;
  int64_t n_words_;
};

// A run of bytes to read, e.g. a weight matrix or a piece of one.
struct ByteRegion {
  const uint8_t* data;
  uint64_t bytes;
};

// Reads every byte of every region once with plain loads, nothing computed on them, one region
// per task on the arena's threads (on the calling thread when null). Returns a sum of what was
// read (64-bit words, then any tail bytes), so the reads cannot be elided and tests can check
// that every byte was read.
uint64_t read_regions(std::span<const ByteRegion> regions, CpuArena* arena);

// One probe, measured once.
double measure_read_bandwidth(CpuArena* arena, uint64_t bytes = uint64_t{1} << 30, int reps = 5);

}  // namespace tandem
