// Loop nest of the AVX-512 kernels for products of many tokens (prefill, expert groups): rows
// are taken 16 at a time, each 16-row block is transposed once into a thread-local buffer so
// that int32 lane r of a vector belongs to row r, and token tiles then run over the buffer.
// A kernel family describes itself with a Strip type:
//   kBlockElems      weights per block along a row; kBytesPerBlock: buffer bytes per block;
//   kMaxTile         largest token tile (8 or 4);
//   pack(w, r0, valid, nb, buf)                       transposes rows r0.. (valid: the mask);
//   tokens<NT>(buf, nb, act, t0, valid, y, y_stride)  writes y for tokens t0..t0+NT-1.
// Every row and token is computed the same way whatever shares its tile, so results do not
// depend on how the work is split. Included only from cpu/avx512/*.cpp (unnamed namespace).
#pragma once

#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/interleave.h"
#include "cpu/kernels.h"
#include "cpu/tile_driver.h"

namespace tandem {
namespace {

// Fewer tokens than this run on the row kernels: the transposition would cost more than it saves.
constexpr int64_t kStripMinTokens = 16;

inline uint8_t* strip_buffer(int64_t bytes) {
  thread_local std::vector<uint8_t> buffer;
  if (buffer.size() < static_cast<size_t>(bytes) + 64)
    buffer.resize(static_cast<size_t>(bytes) + 64);
  const auto addr = reinterpret_cast<uintptr_t>(buffer.data());
  return buffer.data() + ((64 - addr % 64) % 64);
}

// Byte offsets of the 16 rows of a block, for gathers.
inline __m512i strip_row_offsets(int64_t row_stride) {
  return _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                            _mm512_set1_epi32(static_cast<int32_t>(row_stride)));
}

template <class Strip, template <int> class RowKernel>
void run_strips(const MatrixRef& w, const ActPack& a, int64_t r_lo, int64_t r_hi, int64_t t_lo,
                int64_t t_hi, float* y, int64_t y_stride) {
  if (t_hi - t_lo < kStripMinTokens || w.row_stride > INT32_MAX / 16) {
    return run_tiles<RowKernel>(w, a, r_lo, r_hi, t_lo, t_hi, y, y_stride);
  }
  const int64_t nb = w.n_cols / Strip::kBlockElems;
  uint8_t* buf = strip_buffer(nb * Strip::kBytesPerBlock);
  for (int64_t r0 = r_lo; r0 < r_hi; r0 += 16) {
    const int64_t rows = std::min<int64_t>(16, r_hi - r0);
    const __mmask16 valid =
        rows >= 16 ? __mmask16{0xFFFF} : static_cast<__mmask16>((1u << rows) - 1);
    Strip::pack(w, r0, valid, nb, buf);
    float* yr = y + r0;
    int64_t t = t_lo;
    if constexpr (Strip::kMaxTile >= 8) {
      for (; t + 8 <= t_hi; t += 8) Strip::template tokens<8>(buf, nb, a, t, valid, yr, y_stride);
    }
    for (; t + 4 <= t_hi; t += 4) Strip::template tokens<4>(buf, nb, a, t, valid, yr, y_stride);
    for (; t < t_hi; ++t) Strip::template tokens<1>(buf, nb, a, t, valid, yr, y_stride);
  }
}

// Loop nest of the kernels over an interleaved layout (cpu/interleave.h), whose groups already
// are 16-row blocks. A layout describes itself with an Interleaved type:
//   kName, kBlockElems, kBytesPerBlock, kMaxTile   as above;
//   expand(group, nb, buf)                               the group's strip, without gathers;
//   strip<NT>(buf, nb, act, t0, y, y_stride)             the strip's token tile;
//   direct<NT>(group, nb, act, t0, y, y_stride, end)     a token tile straight from the group;
//                                                        `end`: where this call's rows end.
// Many tokens expand each group once for all token tiles; few run straight from the weights.
// Rows [r_lo, r_hi) are whole groups (the matmul drivers split at FastKernel::row_block).
template <class Interleaved>
void run_interleaved(const MatrixRef& w, const ActPack& a, int64_t r_lo, int64_t r_hi, int64_t t_lo,
                     int64_t t_hi, float* y, int64_t y_stride) {
  if (r_lo % kInterleaveRows != 0 || r_hi % kInterleaveRows != 0) {
    throw std::logic_error(std::string(Interleaved::kName) + " kernel: rows [" +
                           std::to_string(r_lo) + ", " + std::to_string(r_hi) +
                           ") split an interleaved group");
  }
  const int64_t nb = w.n_cols / Interleaved::kBlockElems;
  const auto* base = static_cast<const uint8_t*>(w.data);
  uint8_t* buf =
      t_hi - t_lo >= kStripMinTokens ? strip_buffer(nb * Interleaved::kBytesPerBlock) : nullptr;
  const uint8_t* stream_end = base + r_hi * w.row_stride;
  if (!buf) prefetch_stream_start(base + r_lo * w.row_stride, stream_end);
  for (int64_t r0 = r_lo; r0 < r_hi; r0 += kInterleaveRows) {
    const uint8_t* group = base + r0 * w.row_stride;
    float* yr = y + r0;
    int64_t t = t_lo;
    if (buf) {
      Interleaved::expand(group, nb, buf);
      if constexpr (Interleaved::kMaxTile >= 8) {
        for (; t + 8 <= t_hi; t += 8) Interleaved::template strip<8>(buf, nb, a, t, yr, y_stride);
      }
      for (; t + 4 <= t_hi; t += 4) Interleaved::template strip<4>(buf, nb, a, t, yr, y_stride);
      for (; t < t_hi; ++t) Interleaved::template strip<1>(buf, nb, a, t, yr, y_stride);
      continue;
    }
    for (; t + 4 <= t_hi; t += 4)
      Interleaved::template direct<4>(group, nb, a, t, yr, y_stride, stream_end);
    // The last 1-3 tokens (a few sequences decoding together) in one pass over the group, not
    // one pass per token: one matrix of 768 x 2048, 2 tokens, one thread took 1.4-1.5x less.
    switch (t_hi - t) {
      case 3:
        Interleaved::template direct<3>(group, nb, a, t, yr, y_stride, stream_end);
        break;
      case 2:
        Interleaved::template direct<2>(group, nb, a, t, yr, y_stride, stream_end);
        break;
      case 1:
        Interleaved::template direct<1>(group, nb, a, t, yr, y_stride, stream_end);
        break;
      default:
        break;
    }
  }
}

}  // namespace
}  // namespace tandem
