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

enum class Direction { ToInterleaved, ToRows };

// Moves one group of 16 rows between the file layout (rows) and the interleaved one (mixed).
void move_group(const uint8_t* src, uint8_t* dst, int64_t row_size, int64_t block_bytes,
                Direction direction) {
  const int64_t words_per_block = block_bytes / kWordBytes;
  const int64_t n_blocks = row_size / block_bytes;
  for (int64_t i = 0; i < n_blocks; ++i) {
    for (int64_t k = 0; k < words_per_block; ++k) {
      const int64_t mixed = (i * words_per_block + k) * kInterleaveRows * kWordBytes;
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        const int64_t row = r * row_size + i * block_bytes + k * kWordBytes;
        if (direction == Direction::ToInterleaved) {
          std::memcpy(dst + mixed + r * kWordBytes, src + row, kWordBytes);
        } else {
          std::memcpy(dst + row, src + mixed + r * kWordBytes, kWordBytes);
        }
      }
    }
  }
}

// Rearranges whole groups in place through one group of scratch.
void move_rows_in_place(GgmlType type, uint8_t* data, int64_t n_rows, int64_t n_cols,
                        Direction direction, const char* what) {
  if (n_rows % kInterleaveRows != 0) {
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n_rows) +
                                " rows is not a multiple of " + std::to_string(kInterleaveRows));
  }
  const int64_t rb = row_bytes(type, n_cols), group = rb * kInterleaveRows;
  std::vector<uint8_t> scratch(static_cast<size_t>(group));
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    std::memcpy(scratch.data(), data + g * group, static_cast<size_t>(group));
    move_group(scratch.data(), data + g * group, rb, traits(type).block_bytes, direction);
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
  move_rows_in_place(type, data, n_rows, n_cols, Direction::ToInterleaved, "interleave_rows");
}

void deinterleave_rows(GgmlType interleaved, uint8_t* data, int64_t n_rows, int64_t n_cols) {
  move_rows_in_place(interleaved, data, n_rows, n_cols, Direction::ToRows, "deinterleave_rows");
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
    move_group(base + r * w.row_stride, rows.data(), w.row_stride, block_bytes, Direction::ToRows);
    const int64_t n = std::min(kInterleaveRows, r_hi - r);
    std::memcpy(dst + (r - r_lo) * w.row_stride, rows.data(),
                static_cast<size_t>(n * w.row_stride));
  }
}

}  // namespace tandem
