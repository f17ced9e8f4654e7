// Load-time work spread over plain threads (no arena exists yet while a model loads).
#pragma once

#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace tandem {

// Runs `work` on min(max_threads, hardware threads) threads, the caller being one of them, and
// returns when all have returned. `work` takes its items itself (e.g. from an atomic counter).
template <class Work>
void run_on_worker_threads(uint64_t max_threads, Work&& work) {
  const uint64_t n = std::max<uint64_t>(
      1, std::min<uint64_t>(max_threads, std::max(1u, std::thread::hardware_concurrency())));
  std::vector<std::thread> helpers;
  for (uint64_t t = 1; t < n; ++t) helpers.emplace_back(work);
  work();
  for (std::thread& h : helpers) h.join();
}

}  // namespace tandem
