// The GPU side of a hardware profile: the figures the sim accelerator's virtual clock uses to
// predict how long each device op and PCIe transfer takes. Loaded from the "gpu" object of
// configs/hardware/*.json.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

#include "cpu/quant_types.h"

namespace tandem {

class HardwareProfileError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct HardwareProfile {
  std::string name;                 // e.g. "NVIDIA GeForce RTX 4090"
  uint64_t vram_bytes = 0;          // device memory
  double hbm_gbps = 0.0;            // device memory bandwidth, GB/s (1e9 B/s)
  double fp32_tflops = 0.0;         // dense, no tensor cores
  double fp16_tflops = 0.0;         // dense tensor-core rate
  double bf16_tflops = 0.0;         // dense tensor-core rate
  double int8_tops = 0.0;           // dense tensor-core rate
  double pcie_gbps = 0.0;           // host-to-device bandwidth actually reachable, GB/s
  double pcie_latency_us = 0.0;     // fixed cost per transfer
  double launch_overhead_us = 0.0;  // fixed cost per kernel

  // Multiply-adds count as two operations. The rate a GEMM with weights of `type` runs at:
  // f32 on the plain FP32 units, f16/bf16 on tensor cores, quantized types on the int8 tensor
  // cores (activations are quantized to 8 bits, as llama.cpp's MMQ kernels do).
  double ops_per_us(GgmlType type) const;
  // Throws HardwareProfileError naming the field when a figure is missing or not positive.
  void validate(const std::string& source) const;
};

// Parses a profile document: the figures live in its "gpu" object (a document that is just
// that object is accepted too). Missing bf16 defaults to fp16, fp32 to fp16 / 4, int8 to
// 2 * fp16, latency and launch overhead to 0. `source` names the input in errors.
HardwareProfile parse_hardware_profile(const std::string& json_text, const std::string& source);
// Reads and parses a file; errors name the path.
HardwareProfile load_hardware_profile(const std::string& path);

}  // namespace tandem
