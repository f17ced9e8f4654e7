#include "gpu/accelerator.h"

#include "cpu/interleave.h"

namespace tandem {

void Accelerator::upload_matrix(Stream stream, DeviceBuffer dst, uint64_t dst_offset,
                                const MatrixRef& host) {
  if (is_interleaved(host.type)) return upload_interleaved(stream, dst, dst_offset, host);
  copy_to_device(stream, dst, dst_offset, host.data,
                 static_cast<uint64_t>(host.n_rows) * static_cast<uint64_t>(host.row_stride));
}

}  // namespace tandem
