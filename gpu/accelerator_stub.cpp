// The gpu library's anchor translation unit: reports which backends this build contains.
#include "gpu/backends.h"

namespace tandem {

bool cuda_backend_compiled() {
#ifdef TANDEM_HAVE_CUDA
  return true;
#else
  return false;
#endif
}

}  // namespace tandem
