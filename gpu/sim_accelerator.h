// Factory of the sim accelerator: the Accelerator interface on host threads, with results
// computed by the CPU kernels and times predicted by a hardware profile (see gpu/sim/).
#pragma once

#include <cstdint>
#include <memory>

#include "gpu/accelerator.h"
#include "gpu/hardware_profile.h"

namespace tandem {

class TraceRecorder;

// memory_budget: bytes of "device" memory (0: the profile's vram_bytes). trace: when not null,
// every op records a span on the virtual clock (tracks "sim gpu compute" and "sim pcie copy").
// The recorder must outlive the accelerator.
std::unique_ptr<Accelerator> make_sim_accelerator(const HardwareProfile& profile,
                                                  uint64_t memory_budget, TraceRecorder* trace);

}  // namespace tandem
