#include "cpu/memory_bandwidth.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>

#include "cpu/arena.h"

namespace tandem {

uint64_t sum_words_avx512(const uint64_t* data, int64_t n);  // cpu/avx512/read_sum.cpp

namespace {

uint64_t sum_words_scalar(const uint64_t* data, int64_t n) {
  uint64_t a = 0, b = 0, c = 0, d = 0;
  int64_t i = 0;
  for (; i + 4 <= n; i += 4) {
    a += data[i];
    b += data[i + 1];
    c += data[i + 2];
    d += data[i + 3];
  }
  for (; i < n; ++i) a += data[i];
  return a + b + c + d;
}

}  // namespace

double measure_read_bandwidth(CpuArena* arena, uint64_t bytes, int reps) {
  const int64_t n_words = static_cast<int64_t>(bytes / sizeof(uint64_t));
  std::unique_ptr<uint64_t, decltype(&std::free)> buf(
      static_cast<uint64_t*>(std::aligned_alloc(64, n_words * sizeof(uint64_t))), &std::free);
  // Touch every page from the threads that will read it (first-touch NUMA placement).
  auto fill = [&](int64_t lo, int64_t hi) { std::memset(buf.get() + lo, 1, (hi - lo) * sizeof(uint64_t)); };
  const int64_t grain = int64_t{1} << 20;
  if (arena) arena->parallel_for(0, n_words, grain, fill); else fill(0, n_words);

  const bool wide = __builtin_cpu_supports("avx512f");
  std::atomic<uint64_t> sink{0};
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    auto read = [&](int64_t lo, int64_t hi) {
      const uint64_t s = wide ? sum_words_avx512(buf.get() + lo, hi - lo) : sum_words_scalar(buf.get() + lo, hi - lo);
      sink.fetch_add(s, std::memory_order_relaxed);
    };
    if (arena) arena->parallel_for(0, n_words, grain, read); else read(0, n_words);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, static_cast<double>(bytes) / s / 1e9);
  }
  return sink.load() == 1 ? 0.0 : best;  // the comparison keeps the sums from being elided
}

}  // namespace tandem
