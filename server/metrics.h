// Prometheus text exposition of the server's counters (GET /metrics).
#pragma once

#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <utility>

#include "engine/batcher.h"

namespace tandem {

// Requests answered, by route and status code. Thread-safe.
class HttpCounters {
 public:
  void count(const std::string& route, int status);
  std::map<std::pair<std::string, int>, uint64_t> snapshot() const;

 private:
  mutable std::mutex mutex_;
  std::map<std::pair<std::string, int>, uint64_t> counts_;
};

// Text format 0.0.4: HELP/TYPE lines, then samples.
std::string render_metrics(const BatcherMetrics& batcher, const HttpCounters& http, bool loading);

}  // namespace tandem
