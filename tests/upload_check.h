// Shared by the sim and CUDA accelerator tests: Accelerator::upload_matrix of a row-interleaved
// matrix must leave the file's rows in device memory, byte for byte.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <random>
#include <vector>

#include "cpu/interleave.h"
#include "cpu/quant.h"
#include "gpu/accelerator.h"

namespace tandem::test {

// Quantizes random rows of `file_type`, interleaves a copy for the CPU, uploads that copy at a
// non-zero offset and compares what comes back with the file rows.
inline void expect_upload_rebuilds_rows(Accelerator& acc, GgmlType file_type, int64_t n_rows,
                                        int64_t n_cols, uint32_t seed) {
  const int64_t stride = row_bytes(file_type, n_cols);
  std::vector<uint8_t> rows(static_cast<size_t>(n_rows * stride));
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> values(static_cast<size_t>(n_cols));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (float& v : values) v = dist(rng);
    quantize_row(file_type, values.data(), rows.data() + r * stride, n_cols);
  }
  std::vector<uint8_t> mixed = rows;
  interleave_rows(file_type, mixed.data(), n_rows, n_cols);
  ASSERT_NE(mixed, rows) << "interleaving changed nothing: the test would not cover it";

  constexpr uint64_t kOffset = 256;
  const DeviceBuffer buf = acc.allocate(kOffset + rows.size());
  const MatrixRef host{*interleaved_type(file_type), mixed.data(), n_rows, n_cols, stride};
  acc.upload_matrix(Stream::Copy, buf, kOffset, host);
  std::vector<uint8_t> back(rows.size());
  acc.copy_to_host(Stream::Copy, back.data(), buf, kOffset, back.size());
  acc.synchronize(Stream::Copy);
  acc.release(buf);
  EXPECT_EQ(back, rows) << type_name(file_type) << " " << n_rows << " x " << n_cols;

  // A matrix in its file type passes through unchanged.
  const DeviceBuffer plain = acc.allocate(rows.size());
  acc.upload_matrix(Stream::Copy, plain, 0,
                    MatrixRef{file_type, rows.data(), n_rows, n_cols, stride});
  acc.copy_to_host(Stream::Copy, back.data(), plain, 0, back.size());
  acc.synchronize(Stream::Copy);
  acc.release(plain);
  EXPECT_EQ(back, rows) << type_name(file_type) << " (file layout)";
}

}  // namespace tandem::test
