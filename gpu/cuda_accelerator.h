// The CUDA + cuBLAS accelerator (gpu/cuda/). This header has no CUDA types and compiles in
// every build; without the CUDA backend the factory throws (gpu/cuda_fallback.cpp).
#pragma once

#include <cstdint>
#include <memory>

#include "gpu/accelerator.h"

namespace tandem {

// What the CUDA accelerator offers beyond the Accelerator interface. The factory returns an
// Accelerator; dynamic_cast to this to reach these.
class CudaAccelerator : public Accelerator {
 public:
  // Bytes of the accelerator's own scratch (activation quantization, GEMM dequantization),
  // counted against the budget next to live_bytes().
  virtual uint64_t workspace_bytes() const = 0;
  virtual int device() const = 0;
};

// An accelerator on CUDA device `device` allowed `memory_budget` bytes (0: the device's free
// memory at creation). Throws AcceleratorError when the build has no CUDA backend, the device
// does not exist, or the budget exceeds the device's memory.
std::unique_ptr<Accelerator> make_cuda_accelerator(int device, uint64_t memory_budget);

}  // namespace tandem
