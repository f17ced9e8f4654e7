#include "gpu/accelerator_factory.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#ifdef TANDEM_HAVE_CUDA
#include "gpu/cuda/device_query.h"
#endif
#include "gpu/cuda_accelerator.h"
#include "gpu/hardware_profile.h"
#include "gpu/sim_accelerator.h"

namespace tandem {
namespace {

constexpr double kGiB = 1073741824.0;
// Working buffers (activations, scratch) stay outside the expert cache.
constexpr uint64_t kWorkingReserve = uint64_t{256} << 20;

bool is_index(const std::string& s) {
  return !s.empty() && s.size() < 4 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

}  // namespace

void validate_gpu_device(const std::string& device) {
  if (device == "none" || device == "sim" || is_index(device)) return;
  throw std::invalid_argument("gpu device '" + device + "' is not 'none', 'sim' or a device index");
}

std::string default_hardware_profile_path() {
  return std::string(TANDEM_DATA_DIR) + "/configs/hardware/rtx4090-ddr5-desktop.json";
}

std::unique_ptr<Accelerator> make_accelerator(const GpuConfig& config, TraceRecorder* trace,
                                              std::string* log) {
  validate_gpu_device(config.device);
  if (config.memory_budget_gb < 0) throw std::invalid_argument("gpu memory budget must not be negative");
  const auto budget = static_cast<uint64_t>(config.memory_budget_gb * kGiB);
  if (config.device == "none") return nullptr;
  if (config.device == "sim") {
    const std::string path = config.hardware_profile.empty() ? default_hardware_profile_path() : config.hardware_profile;
    const HardwareProfile profile = load_hardware_profile(path);
    if (budget > profile.vram_bytes) {
      throw std::invalid_argument("gpu memory budget " + std::to_string(config.memory_budget_gb) +
                                  " GB exceeds the " + std::to_string(profile.vram_bytes / kGiB) +
                                  " GB of VRAM of hardware profile " + path);
    }
    if (log) *log = "accelerator: sim, hardware profile " + path + " (results computed on the CPU, times modelled)";
    return make_sim_accelerator(profile, budget, trace);
  }
  // A device index: the CUDA backend. Without a usable device the engine runs CPU-only and
  // says so; a device that exists but cannot take the budget is an error (AcceleratorError).
#ifdef TANDEM_HAVE_CUDA
  const int index = std::stoi(config.device);
  const int n_devices = cuda_device_count();
  if (n_devices == 0) {
    if (log) *log = "accelerator: no CUDA device found; running CPU-only";
    return nullptr;
  }
  if (index >= n_devices) {
    throw std::invalid_argument("gpu device " + config.device + " does not exist (" +
                                std::to_string(n_devices) + " CUDA device(s) found)");
  }
  auto accelerator = make_cuda_accelerator(index, budget);
  if (log) {
    *log = "accelerator: CUDA device " + config.device + ", budget " +
           std::to_string(accelerator->memory_budget() / kGiB) + " GiB" +
           (trace ? " (the trace records the CPU side only on CUDA)" : "");
  }
  return accelerator;
#else
  (void)trace;
  if (log) *log = "accelerator: this build has no CUDA backend (built without nvcc); running CPU-only";
  return nullptr;
#endif
}

uint64_t expert_cache_budget(const GpuConfig& config, const Accelerator& accelerator) {
  const uint64_t budget = accelerator.memory_budget();
  const uint64_t available = budget > kWorkingReserve ? budget - kWorkingReserve : 0;
  if (config.expert_cache_gb < 0) return available;
  const auto wanted = static_cast<uint64_t>(config.expert_cache_gb * kGiB);
  if (wanted > available) {
    throw std::invalid_argument("expert cache of " + std::to_string(config.expert_cache_gb) +
                                " GB exceeds the " + std::to_string(available / kGiB) +
                                " GB the accelerator's budget leaves after working buffers");
  }
  return wanted;
}

}  // namespace tandem
