#include "cpu/memory_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <new>
#include <vector>

#include "cpu/arena.h"

namespace tandem {

uint64_t sum_words_avx512(const uint64_t* data, int64_t n);  // cpu/avx512/read_sum.cpp

namespace {

// Words are copied out, not cast: a GGUF file may align its tensors to fewer than 8 bytes.
uint64_t sum_words_scalar(const void* data, int64_t n) {
  const auto* bytes = static_cast<const uint8_t*>(data);
  uint64_t sums[4] = {0, 0, 0, 0};
  for (int64_t i = 0; i < n; ++i) {
    uint64_t word;
    std::memcpy(&word, bytes + i * sizeof(uint64_t), sizeof(word));
    sums[i % 4] += word;
  }
  return sums[0] + sums[1] + sums[2] + sums[3];
}

constexpr int64_t kGrain = int64_t{1} << 20;  // words per task (8 MiB)

}  // namespace

ReadBandwidthProbe::ReadBandwidthProbe(CpuArena* arena, uint64_t bytes)
    : arena_(arena), n_words_(static_cast<int64_t>(bytes / sizeof(uint64_t))) {
  words_ = static_cast<uint64_t*>(std::aligned_alloc(64, n_words_ * sizeof(uint64_t)));
  if (!words_) throw std::bad_alloc();
  // Touch every page from the threads that will read it (first-touch NUMA placement).
  auto fill = [&](int64_t lo, int64_t hi) {
    std::memset(words_ + lo, 1, (hi - lo) * sizeof(uint64_t));
  };
  if (arena_) arena_->parallel_for(0, n_words_, kGrain, fill); else fill(0, n_words_);
}

ReadBandwidthProbe::~ReadBandwidthProbe() { std::free(words_); }

uint64_t read_regions(std::span<const ByteRegion> regions, CpuArena* arena) {
  const bool wide = __builtin_cpu_supports("avx512f");
  std::atomic<uint64_t> sum{0};
  auto read = [&](int64_t lo, int64_t hi) {
    uint64_t s = 0;
    for (int64_t i = lo; i < hi; ++i) {
      const ByteRegion& r = regions[static_cast<size_t>(i)];
      const auto n_words = static_cast<int64_t>(r.bytes / sizeof(uint64_t));
      s += wide ? sum_words_avx512(reinterpret_cast<const uint64_t*>(r.data), n_words)
                : sum_words_scalar(r.data, n_words);
      for (uint64_t b = static_cast<uint64_t>(n_words) * sizeof(uint64_t); b < r.bytes; ++b)
        s += r.data[b];
    }
    sum.fetch_add(s, std::memory_order_relaxed);
  };
  const auto n = static_cast<int64_t>(regions.size());
  if (arena)
    arena->parallel_for(0, n, 1, read);
  else
    read(0, n);
  return sum.load();
}

double ReadBandwidthProbe::measure(int reps) {
  const uint64_t total = static_cast<uint64_t>(n_words_) * sizeof(uint64_t);
  const uint64_t piece = kGrain * sizeof(uint64_t);
  std::vector<ByteRegion> pieces;
  const auto* bytes = reinterpret_cast<const uint8_t*>(words_);
  for (uint64_t at = 0; at < total; at += piece)
    pieces.push_back({bytes + at, std::min(piece, total - at)});
  uint64_t sum = 0;
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    sum += read_regions(pieces, arena_);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, static_cast<double>(total) / s / 1e9);
  }
  return sum == 1 ? 0.0 : best;  // the comparison keeps the sums from being elided
}

double measure_read_bandwidth(CpuArena* arena, uint64_t bytes, int reps) {
  ReadBandwidthProbe probe(arena, bytes);
  return probe.measure(reps);
}

}  // namespace tandem
