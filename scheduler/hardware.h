// A workstation as the scheduler's cost model sees it: peak figures of the GPU, the PCIe link
// and the CPU, the fraction of each peak that kernels reach, and where every figure comes from.
// Read from configs/hardware/*.json (the "gpu" object is shared with the sim accelerator).
#pragma once

#include <map>
#include <stdexcept>
#include <string>

#include <nlohmann/json_fwd.hpp>

namespace tandem::sched {

class HardwareError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct GpuSpec {
  std::string name;
  double vram_gb = 0.0;   // GiB of device memory
  double hbm_gbps = 0.0;  // device memory bandwidth, 1e9 B/s
  double fp32_tflops = 0.0;
  double fp16_tflops = 0.0;  // dense tensor-core rates
  double bf16_tflops = 0.0;
  double int8_tops = 0.0;
  double pcie_gbps = 0.0;  // host-to-device bandwidth reachable with pinned memory
  double pcie_latency_us = 0.0;
  double launch_overhead_us = 0.0;
};

struct CpuSpec {
  std::string name;
  int cores = 0;
  double dram_gb = 0.0;      // installed host memory
  double dram_gbps = 0.0;    // theoretical peak bandwidth
  double int8_tops = 0.0;    // AVX-512 VNNI peak over all cores (AVX2 where no AVX-512)
  double bf16_tflops = 0.0;  // AVX-512 BF16 peak
  double fp32_tflops = 0.0;  // FMA peak
};

// Achieved fraction of each peak (assumptions, stated in the profile's sources).
struct Efficiency {
  double gpu_memory = 0.8;
  double gpu_compute = 0.5;
  double cpu_memory = 0.75;
  double cpu_compute = 0.35;
};

struct HardwareSpec {
  std::string name;
  std::string description;
  bool has_gpu = false;
  GpuSpec gpu;
  CpuSpec cpu;
  Efficiency efficiency;
  std::map<std::string, std::string> sources;  // field(s) -> public source or assumption
};

// Parses and validates a profile; `source` names the input in errors. Every figure must be a
// positive number, efficiencies in (0, 1], and "sources" a non-empty object of strings.
HardwareSpec parse_hardware_spec(const nlohmann::json& doc, const std::string& source);
HardwareSpec load_hardware_spec(const std::string& path);

}  // namespace tandem::sched
