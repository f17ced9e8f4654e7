// make_cuda_accelerator for builds without the CUDA backend (with it, gpu/cuda/ defines it).
#ifndef TANDEM_HAVE_CUDA
#include <string>

#include "gpu/cuda_accelerator.h"

namespace tandem {

std::unique_ptr<Accelerator> make_cuda_accelerator(int device, uint64_t /*memory_budget*/) {
  throw AcceleratorError("CUDA device " + std::to_string(device) +
                         " requested, but this build has no CUDA backend (configure with "
                         "-DTANDEM_CUDA=ON where nvcc is installed)");
}

}  // namespace tandem
#endif
