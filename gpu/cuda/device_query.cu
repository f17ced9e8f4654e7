// CUDA device discovery. A machine without a driver or device is normal: it yields 0.
#include <cuda_runtime.h>

#include "gpu/cuda/device_query.h"

namespace tandem {

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky error so later calls start clean
    return 0;
  }
  return count;
}

}  // namespace tandem
