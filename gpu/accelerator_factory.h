// Builds the accelerator a config or command line asks for: none, the sim accelerator, or a
// CUDA device (falling back to CPU-only with a log line when no device is usable).
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "gpu/accelerator.h"

namespace tandem {

class TraceRecorder;

struct GpuConfig {
  std::string device = "none";  // "none", "sim", or a CUDA device index ("0")
  double memory_budget_gb = 0;  // 0: the whole device (sim: the profile's VRAM)
  double expert_cache_gb = -1;  // < 0: the budget minus working buffers
  std::string hardware_profile; // sim only; empty: configs/hardware/rtx4090-ddr5-desktop.json
};

// Validates device names ("none", "sim", a non-negative integer); throws std::invalid_argument
// naming the value otherwise.
void validate_gpu_device(const std::string& device);

// nullptr for "none" or when CUDA finds no device (the reason goes to `log`).
std::unique_ptr<Accelerator> make_accelerator(const GpuConfig& config, TraceRecorder* trace,
                                              std::string* log);

// Bytes of accelerator memory to give the expert cache under `config`.
uint64_t expert_cache_budget(const GpuConfig& config, const Accelerator& accelerator);

// The default hardware profile of the sim accelerator.
std::string default_hardware_profile_path();

}  // namespace tandem
