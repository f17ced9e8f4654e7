#include "cpu/interleave.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/kernels.h"

namespace tandem {
namespace {

constexpr int64_t kWordBytes = 4;

void require_groups(int64_t n_rows, const char* what) {
  if (n_rows % kInterleaveRows != 0) {
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n_rows) +
                                " rows is not a multiple of " + std::to_string(kInterleaveRows));
  }
}

// Moves one group of 16 rows between the file layout (rows) and the interleaved one (mixed).
void interleave_group(const uint8_t* rows, uint8_t* mixed, int64_t row_bytes, int64_t block_bytes) {
  const int64_t words_per_block = block_bytes / kWordBytes;
  const int64_t n_blocks = row_bytes / block_bytes;
  for (int64_t i = 0; i < n_blocks; ++i) {
    for (int64_t k = 0; k < words_per_block; ++k) {
      uint8_t* out = mixed + ((i * words_per_block + k) * kInterleaveRows) * kWordBytes;
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        std::memcpy(out + r * kWordBytes, rows + r * row_bytes + i * block_bytes + k * kWordBytes,
                    kWordBytes);
      }
    }
  }
}

void deinterleave_group(const uint8_t* mixed, uint8_t* rows, int64_t row_bytes,
                        int64_t block_bytes) {
  const int64_t words_per_block = block_bytes / kWordBytes;
  const int64_t n_blocks = row_bytes / block_bytes;
  for (int64_t i = 0; i < n_blocks; ++i) {
    for (int64_t k = 0; k < words_per_block; ++k) {
      const uint8_t* in = mixed + ((i * words_per_block + k) * kInterleaveRows) * kWordBytes;
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        std::memcpy(rows + r * row_bytes + i * block_bytes + k * kWordBytes, in + r * kWordBytes,
                    kWordBytes);
      }
    }
  }
}

}  // namespace

std::optional<GgmlType> interleaved_type(GgmlType type) {
  if (type == GgmlType::Q4_K) return GgmlType::Q4_K_X16;
  return std::nullopt;
}

GgmlType file_type_of(GgmlType type) {
  return type == GgmlType::Q4_K_X16 ? GgmlType::Q4_K : type;
}

bool is_interleaved(GgmlType type) {
  return type == GgmlType::Q4_K_X16;
}

bool worth_interleaving(GgmlType type, int64_t n_rows) {
  const std::optional<GgmlType> x = interleaved_type(type);
  return x && n_rows > 0 && n_rows % kInterleaveRows == 0 &&
         find_fast_kernel(*x, cpu_features()) != nullptr;
}

void interleave_rows(GgmlType type, uint8_t* data, int64_t n_rows, int64_t n_cols) {
  require_groups(n_rows, "interleave_rows");
  const int64_t rb = row_bytes(type, n_cols), group = rb * kInterleaveRows;
  std::vector<uint8_t> rows(static_cast<size_t>(group));
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    std::memcpy(rows.data(), data + g * group, static_cast<size_t>(group));
    interleave_group(rows.data(), data + g * group, rb, traits(type).block_bytes);
  }
}

void deinterleave_rows(GgmlType interleaved, uint8_t* data, int64_t n_rows, int64_t n_cols) {
  require_groups(n_rows, "deinterleave_rows");
  const int64_t rb = row_bytes(interleaved, n_cols), group = rb * kInterleaveRows;
  std::vector<uint8_t> mixed(static_cast<size_t>(group));
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    std::memcpy(mixed.data(), data + g * group, static_cast<size_t>(group));
    deinterleave_group(mixed.data(), data + g * group, rb, traits(interleaved).block_bytes);
  }
}

void copy_rows_deinterleaved(const MatrixRef& w, int64_t r_lo, int64_t r_hi, uint8_t* dst) {
  if (r_lo % kInterleaveRows != 0) {
    throw std::invalid_argument("copy_rows_deinterleaved: first row " + std::to_string(r_lo) +
                                " does not start a group");
  }
  const auto* base = static_cast<const uint8_t*>(w.data);
  const int64_t block_bytes = traits(w.type).block_bytes, group = w.row_stride * kInterleaveRows;
  std::vector<uint8_t> rows(static_cast<size_t>(group));
  for (int64_t r = r_lo; r < r_hi; r += kInterleaveRows) {
    deinterleave_group(base + r * w.row_stride, rows.data(), w.row_stride, block_bytes);
    const int64_t n = std::min(kInterleaveRows, r_hi - r);
    std::memcpy(dst + (r - r_lo) * w.row_stride, rows.data(),
                static_cast<size_t>(n * w.row_stride));
  }
}

}  // namespace tandem
