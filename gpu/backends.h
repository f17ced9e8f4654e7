#pragma once

namespace tandem {

// True when this binary was built with the CUDA backend (it may still find no device).
bool cuda_backend_compiled();

}  // namespace tandem
