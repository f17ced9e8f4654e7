// Predicted durations of device ops on the hardware a profile describes: a roofline per op
// (the slower of moving its bytes through HBM and doing its arithmetic) plus a fixed launch
// cost, and latency + bytes / bandwidth for PCIe transfers.
#pragma once

#include <cstdint>

#include "cpu/quant_types.h"
#include "gpu/hardware_profile.h"

namespace tandem {

class SimCostModel {
 public:
  explicit SimCostModel(const HardwareProfile& profile) : p_(profile) {}

  // A host <-> device transfer of `bytes`.
  double copy_us(uint64_t bytes) const;
  // One kernel that moves `bytes` through device memory and does `ops` operations at `rate`
  // operations per microsecond (0 ops: memory-bound).
  double kernel_us(double bytes, double ops, double ops_per_us) const;
  // y = W x for n_tokens tokens, W n_rows x n_cols of `type`: weights read once, activations
  // read and results written once.
  double matmul_us(GgmlType type, int64_t n_rows, int64_t n_cols, int64_t n_tokens) const;
  // A memory-bound element-wise kernel.
  double elementwise_us(double bytes) const { return kernel_us(bytes, 0.0, 1.0); }
  // Causal attention of n_tokens queries over n_kv cached positions each (an upper bound for
  // prefill: every query is charged the full n_kv).
  double attention_us(int64_t n_tokens, int64_t n_kv, int64_t n_head, int64_t n_head_kv,
                      int64_t head_dim) const;

 private:
  HardwareProfile p_;
};

}  // namespace tandem
