#include "gpu/sim/sim_cost.h"

#include <algorithm>

namespace tandem {
namespace {

// GB/s -> bytes per microsecond.
double bytes_per_us(double gbps) {
  return gbps * 1e3;
}

}  // namespace

double SimCostModel::copy_us(uint64_t bytes) const {
  return p_.pcie_latency_us + static_cast<double>(bytes) / bytes_per_us(p_.pcie_gbps);
}

double SimCostModel::kernel_us(double bytes, double ops, double ops_per_us) const {
  const double memory = bytes / bytes_per_us(p_.hbm_gbps);
  const double math = ops > 0.0 ? ops / ops_per_us : 0.0;
  return p_.launch_overhead_us + std::max(memory, math);
}

double SimCostModel::matmul_us(GgmlType type, int64_t n_rows, int64_t n_cols,
                               int64_t n_tokens) const {
  const double weights = static_cast<double>(n_rows) * static_cast<double>(row_bytes(type, n_cols));
  const double acts = 4.0 * static_cast<double>(n_tokens) * static_cast<double>(n_rows + n_cols);
  const double ops = 2.0 * static_cast<double>(n_rows) * static_cast<double>(n_cols) *
                     static_cast<double>(n_tokens);
  return kernel_us(weights + acts, ops, p_.ops_per_us(type));
}

double SimCostModel::attention_us(int64_t n_tokens, int64_t n_kv, int64_t n_head, int64_t n_head_kv,
                                  int64_t head_dim) const {
  // K and V are read once per KV head group; q and out once.
  const double kv = 2.0 * 4.0 * static_cast<double>(n_kv * n_head_kv * head_dim);
  const double qo = 2.0 * 4.0 * static_cast<double>(n_tokens * n_head * head_dim);
  // q.k and p.v: two multiply-adds per (token, head, position, dim).
  const double ops = 4.0 * static_cast<double>(n_tokens) * static_cast<double>(n_head) *
                     static_cast<double>(n_kv) * static_cast<double>(head_dim);
  return kernel_us(kv + qo, ops, p_.ops_per_us(GgmlType::F16));
}

}  // namespace tandem
