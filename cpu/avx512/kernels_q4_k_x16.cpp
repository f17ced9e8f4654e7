// AVX-512 kernel for Q4_K_X16 (cpu/interleave.h): Q4_K with 16 rows interleaved 4 bytes at a time.
// Every vector load brings the same 4-byte word of 16 rows, so one token is computed for 16 rows
// at once as the many-token strips are (q4_k_strip.h) without transposing anything: per
// super-block, 36 loads, the 16 rows' scales decoded together and one vpdpbusd per 4 activation
// values. The row kernel spends about twice the core time per byte, which made Q4_K decode
// core-bound. Each token's arithmetic is the strips' (integer sums are exact, the float step is
// shared), so results do not depend on the token count or on how rows are split.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own cast helpers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/avx512/q4_k_strip.h"
#include "cpu/avx512/strip_driver.h"
#include "cpu/interleave.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"
#include "cpu/tile_driver.h"

namespace tandem {
namespace {

constexpr int64_t kWordsPerBlock = sizeof(BlockQ4K) / 4;  // 36 vectors per super-block
constexpr int64_t kGroupBlockBytes = kWordsPerBlock * 64;

// Byte `offset` of a row's block (a multiple of 4) sits, for the 16 rows of a group, in one
// vector at offset * 16 from the block's start in the group.
inline const uint8_t* word_address(const uint8_t* group_block, int64_t offset) {
  return group_block + static_cast<uint64_t>(offset) * kInterleaveRows;
}

struct InterleavedK4Rows {
  const uint8_t* group;
  __m512i word(int64_t i, int64_t offset) const {
    return _mm512_loadu_si512(word_address(group + i * kGroupBlockBytes, offset));
  }
};

// Decode streams the group once; like the row kernels (tile_driver.h), it asks for lines
// further on while it reads, which keeps enough requests in flight: while it reads block i it
// asks for block i + kBlocksAhead, a quarter of that block per quarter it reads. Addresses are
// a block's base plus constants, and one test per block keeps the requests inside the chunk
// (blocks of one group and of the next group follow each other in memory), where a clamped
// address per line cost an add, a compare and a select for each of the block's 36 lines
// (kernel alone, 16 random 768 x 2048 experts per call, alternating: 0-6% faster from DRAM,
// the same from cache). How far ahead: Q4_K bench decode, distances cycled round by round in
// one process (10-16 rounds of 32 steps each): six blocks (13.8 KB) ahead 3.6-12.9% faster
// than two in nine runs, while this VM read 29-58 GB/s; five to ten blocks within about 3% of
// six; four 4-9% faster than two. On the VM's earlier (Zen 4) host two had measured best
// (three 0.4-0.8% and four 3.4% slower); the host is now Zen 5.
constexpr int64_t kBlocksAhead = 6;
constexpr int kLinesPerQuarter = kWordsPerBlock / 4;

inline void prefetch_quarter(const uint8_t* block, int quarter) {
  for (int l = 0; l < kLinesPerQuarter; ++l)
    __builtin_prefetch(block + 64 * (kLinesPerQuarter * quarter + l), 0, 3);
}

inline __m512i load_word(const uint8_t* group_block, int64_t offset) {
  return _mm512_loadu_si512(word_address(group_block, offset));
}

// NT tokens against one group of 16 interleaved rows, straight from the weights.
template <int NT>
void q4_k_x16_tokens(const uint8_t* group, int64_t nb, const ActPack& a, int64_t t0, float* y,
                     int64_t y_stride, const uint8_t* stream_end) {
  const __m512i nib = _mm512_set1_epi8(0x0F), high_nib = _mm512_set1_epi8(static_cast<char>(0xF0));
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const uint8_t* blk = group + i * kGroupBlockBytes;
    const uint8_t* ahead = blk + kBlocksAhead * kGroupBlockBytes;
    const bool ask_ahead = ahead + kGroupBlockBytes <= stream_end;
    const int64_t sc = offsetof(BlockQ4K, scales);
    __m512i scale[8], min_pair[4];
    k4_scales_min_pairs(load_word(blk, sc), load_word(blk, sc + 4), load_word(blk, sc + 8), scale,
                        min_pair);
    __m512i scaled[NT], mins[NT];
    for (int t = 0; t < NT; ++t) scaled[t] = mins[t] = _mm512_setzero_si512();
      // Bytes 32c..32c+31 of qs: low nibbles are sub-block 2c, high nibbles sub-block 2c+1. The
      // high nibbles stay in place (16 x their value), which saves a shift per vector; the low
      // sub-block's scale is taken 16 times to match, and the block's sum is divided by 16 at the
      // end, exactly (|16 x sum| < 2^29).
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      if (ask_ahead) prefetch_quarter(ahead, c);
      const int p_lo = kK4Perm[2 * c], p_hi = kK4Perm[2 * c + 1];
      __m512i sum_lo[NT], sum_hi[NT];
      for (int t = 0; t < NT; ++t) sum_lo[t] = sum_hi[t] = _mm512_setzero_si512();
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const __m512i v = load_word(blk, offsetof(BlockQ4K, qs) + 32 * c + 4 * g);
        const __m512i lo = _mm512_and_si512(v, nib);
        const __m512i hi = _mm512_and_si512(v, high_nib);
        for (int t = 0; t < NT; ++t) {
          const uint8_t* aq = a.q + (t0 + t) * a.q_stride + i * kQKK + 4 * g;
          int32_t four_lo, four_hi;
          std::memcpy(&four_lo, aq + 32 * p_lo, 4);
          std::memcpy(&four_hi, aq + 32 * p_hi, 4);
          sum_lo[t] = _mm512_dpbusd_epi32(sum_lo[t], lo, _mm512_set1_epi32(four_lo));
          sum_hi[t] = _mm512_dpbusd_epi32(sum_hi[t], hi, _mm512_set1_epi32(four_hi));
        }
      }
      const __m512i scale_lo = _mm512_slli_epi32(scale[2 * c], 4);
      for (int t = 0; t < NT; ++t) {
        scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(sum_lo[t], scale_lo));
        scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(sum_hi[t], scale[2 * c + 1]));
      }
    }
    for (int t = 0; t < NT; ++t) scaled[t] = _mm512_srai_epi32(scaled[t], 4);
    for (int q = 0; q < 4; ++q) {
      const __m512i mp = min_pair[q];
      for (int t = 0; t < NT; ++t) {
        int32_t pair;
        std::memcpy(&pair, a.sums + (t0 + t) * a.sums_stride + i * 8 + 2 * q, 4);
        mins[t] = _mm512_dpwssd_epi32(mins[t], mp, _mm512_set1_epi32(pair));
      }
    }
    const __m512i dd = load_word(blk, 0);
    const __m512 d = k4_d(dd), dmin = k4_dmin(dd);
    for (int t = 0; t < NT; ++t)
      acc[t] = k4_accumulate(acc[t], scaled[t], mins[t], d, dmin, a.d[(t0 + t) * a.d_stride + i]);
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + (t0 + t) * y_stride, acc[t]);
}

struct Q4_KInterleaved {
  static constexpr const char* kName = "q4_K x16";
  static constexpr int64_t kBlockElems = kQKK, kBytesPerBlock = kK4StripVectors * 64;
  static constexpr int kMaxTile = 4;
  static void expand(const uint8_t* group, int64_t nb, uint8_t* buf) {
    expand_q4_k_strip(InterleavedK4Rows{group}, nb, buf);
  }
  template <int NT>
  static void strip(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0, float* y,
                    int64_t y_stride) {
    q4_k_strip_tokens<NT>(buf, nb, a, t0, 0xFFFF, y, y_stride);
  }
  template <int NT>
  static void direct(const uint8_t* group, int64_t nb, const ActPack& a, int64_t t0, float* y,
                     int64_t y_stride, const uint8_t* stream_end) {
    q4_k_x16_tokens<NT>(group, nb, a, t0, y, y_stride, stream_end);
  }
};

const FastKernel kQ4_K_X16{ActLayout::Q8_K_PERM, run_interleaved<Q4_KInterleaved>,
                           "avx512-vnni q4_K x16", kInterleaveRows};

}  // namespace

const FastKernel* avx512_q4_k_x16_kernel() {
  return &kQ4_K_X16;
}

}  // namespace tandem
