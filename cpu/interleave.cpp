#include "cpu/interleave.h"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"

namespace tandem {

// cpu/avx512/deinterleave.cpp
void deinterleave_group_q4_k_avx512(const uint8_t* group, uint8_t* rows, int64_t row_size);
void deinterleave_group_q8_0_avx512(const uint8_t* group, uint8_t* rows, int64_t row_size);

namespace {

constexpr int64_t kWordBytes = 4;
constexpr int64_t kQ8_0PairBytes = 2 * kInterleaveRows * sizeof(BlockQ8_0);  // 1088
constexpr int64_t kQ8_0QuantBytes = kInterleaveRows * kQK;                   // 512 per block

enum class Direction { ToInterleaved, ToRows };

// Copies `n` bytes between byte `row_offset` of the rows and byte `mixed_offset` of the group.
inline void move_bytes(const uint8_t* src, uint8_t* dst, int64_t row_offset, int64_t mixed_offset,
                       int64_t n, Direction direction) {
  if (direction == Direction::ToInterleaved) {
    std::memcpy(dst + mixed_offset, src + row_offset, static_cast<size_t>(n));
  } else {
    std::memcpy(dst + row_offset, src + mixed_offset, static_cast<size_t>(n));
  }
}

// Q4_K_X16: every 4-byte word of a super-block, in block order (cpu/interleave.h).
void move_group_q4_k(const uint8_t* src, uint8_t* dst, int64_t row_size, Direction direction) {
  constexpr int64_t block_bytes = sizeof(BlockQ4K), words_per_block = block_bytes / kWordBytes;
  const int64_t n_blocks = row_size / block_bytes;
  for (int64_t i = 0; i < n_blocks; ++i) {
    for (int64_t k = 0; k < words_per_block; ++k) {
      const int64_t mixed = (i * words_per_block + k) * kInterleaveRows * kWordBytes;
      for (int64_t r = 0; r < kInterleaveRows; ++r) {
        move_bytes(src, dst, r * row_size + i * block_bytes + k * kWordBytes,
                   mixed + r * kWordBytes, kWordBytes, direction);
      }
    }
  }
}

// Q8_0_X16: blocks in pairs, quants word-interleaved, scales after them (cpu/interleave.h).
void move_group_q8_0(const uint8_t* src, uint8_t* dst, int64_t row_size, Direction direction) {
  constexpr int64_t block_bytes = sizeof(BlockQ8_0), quant_words = kQK / kWordBytes;
  const int64_t n_blocks = row_size / block_bytes;
  for (int64_t i = 0; i < n_blocks; ++i) {
    const int64_t pair = (i / 2) * kQ8_0PairBytes, half = i % 2;
    const int64_t quants = pair + half * kQ8_0QuantBytes;
    const int64_t scales = pair + 2 * kQ8_0QuantBytes + half * kInterleaveRows * sizeof(uint16_t);
    for (int64_t r = 0; r < kInterleaveRows; ++r) {
      const int64_t row_block = r * row_size + i * block_bytes;
      move_bytes(src, dst, row_block + offsetof(BlockQ8_0, d),
                 scales + r * static_cast<int64_t>(sizeof(uint16_t)), sizeof(uint16_t), direction);
      for (int64_t k = 0; k < quant_words; ++k) {
        move_bytes(src, dst, row_block + offsetof(BlockQ8_0, qs) + k * kWordBytes,
                   quants + (k * kInterleaveRows + r) * kWordBytes, kWordBytes, direction);
      }
    }
  }
}

// Moves one group of 16 rows between the file layout (rows) and the interleaved one (mixed).
// Back to rows runs on every upload of an interleaved expert, so it has a vector path.
void move_group(GgmlType file_type, const uint8_t* src, uint8_t* dst, int64_t row_size,
                Direction direction) {
  if (direction == Direction::ToRows && cpu_features().has_avx512_kernels()) {
    if (file_type == GgmlType::Q8_0) return deinterleave_group_q8_0_avx512(src, dst, row_size);
    return deinterleave_group_q4_k_avx512(src, dst, row_size);
  }
  if (file_type == GgmlType::Q8_0) return move_group_q8_0(src, dst, row_size, direction);
  move_group_q4_k(src, dst, row_size, direction);
}

void check_shape(GgmlType file_type, int64_t n_rows, int64_t n_cols, const char* what) {
  if (n_rows % kInterleaveRows != 0) {
    throw std::invalid_argument(std::string(what) + ": " + std::to_string(n_rows) +
                                " rows is not a multiple of " + std::to_string(kInterleaveRows));
  }
  if (n_cols % interleaved_row_multiple(file_type) != 0) {
    throw std::invalid_argument(std::string(what) + ": " + std::string(traits(file_type).name) +
                                " rows of " + std::to_string(n_cols) +
                                " elements are not a multiple of the layout's " +
                                std::to_string(interleaved_row_multiple(file_type)));
  }
}

// Rearranges whole groups in place through one group of scratch.
void move_rows_in_place(GgmlType file_type, uint8_t* data, int64_t n_rows, int64_t n_cols,
                        Direction direction, const char* what) {
  check_shape(file_type, n_rows, n_cols, what);
  const int64_t rb = row_bytes(file_type, n_cols), group = rb * kInterleaveRows;
  std::vector<uint8_t> scratch(static_cast<size_t>(group));
  for (int64_t g = 0; g < n_rows / kInterleaveRows; ++g) {
    std::memcpy(scratch.data(), data + g * group, static_cast<size_t>(group));
    move_group(file_type, scratch.data(), data + g * group, rb, direction);
  }
}

}  // namespace

std::optional<GgmlType> interleaved_type(GgmlType type) {
  if (type == GgmlType::Q4_K) return GgmlType::Q4_K_X16;
  if (type == GgmlType::Q8_0) return GgmlType::Q8_0_X16;
  return std::nullopt;
}

GgmlType file_type_of(GgmlType type) {
  if (type == GgmlType::Q4_K_X16) return GgmlType::Q4_K;
  if (type == GgmlType::Q8_0_X16) return GgmlType::Q8_0;
  return type;
}

int64_t interleaved_row_multiple(GgmlType type) {
  const GgmlType file_type = file_type_of(type);
  return (file_type == GgmlType::Q8_0 ? 2 : 1) * traits(file_type).block_elems;
}

bool is_interleaved(GgmlType type) {
  return file_type_of(type) != type;
}

bool worth_interleaving(GgmlType type, int64_t n_rows, int64_t n_cols) {
  const std::optional<GgmlType> x = interleaved_type(type);
  if (!x || n_rows <= 0 || n_rows % kInterleaveRows != 0) return false;
  if (n_cols % interleaved_row_multiple(type) != 0) return false;
  return find_fast_kernel(*x, cpu_features()) != nullptr;
}

void interleave_rows(GgmlType type, uint8_t* data, int64_t n_rows, int64_t n_cols) {
  if (!interleaved_type(type)) {
    throw std::invalid_argument(std::string("interleave_rows: ") + std::string(traits(type).name) +
                                " has no interleaved layout");
  }
  move_rows_in_place(type, data, n_rows, n_cols, Direction::ToInterleaved, "interleave_rows");
}

void deinterleave_rows(GgmlType interleaved, uint8_t* data, int64_t n_rows, int64_t n_cols) {
  move_rows_in_place(file_type_of(interleaved), data, n_rows, n_cols, Direction::ToRows,
                     "deinterleave_rows");
}

void copy_rows_deinterleaved(const MatrixRef& w, int64_t r_lo, int64_t r_hi, uint8_t* dst) {
  if (r_lo % kInterleaveRows != 0) {
    throw std::invalid_argument("copy_rows_deinterleaved: first row " + std::to_string(r_lo) +
                                " does not start a group");
  }
  const auto* base = static_cast<const uint8_t*>(w.data);
  const GgmlType file_type = file_type_of(w.type);
  const int64_t group = w.row_stride * kInterleaveRows;
  // Whole groups go straight to dst; only a last, partial group needs a group of scratch.
  int64_t r = r_lo;
  for (; r + kInterleaveRows <= r_hi; r += kInterleaveRows) {
    move_group(file_type, base + r * w.row_stride, dst + (r - r_lo) * w.row_stride, w.row_stride,
               Direction::ToRows);
  }
  if (r < r_hi) {
    std::vector<uint8_t> rows(static_cast<size_t>(group));
    move_group(file_type, base + r * w.row_stride, rows.data(), w.row_stride, Direction::ToRows);
    std::memcpy(dst + (r - r_lo) * w.row_stride, rows.data(),
                static_cast<size_t>((r_hi - r) * w.row_stride));
  }
}

}  // namespace tandem
