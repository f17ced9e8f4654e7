#pragma once

namespace tandem {

// Number of usable CUDA devices; 0 when no driver or device is present.
int cuda_device_count();

}  // namespace tandem
