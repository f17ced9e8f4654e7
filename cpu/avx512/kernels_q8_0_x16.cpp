// AVX-512 kernel for Q8_0_X16 (cpu/interleave.h): Q8_0 with 16 rows interleaved 4 bytes at a time,
// blocks in pairs with their scales after the quants. Per block and 16 rows: 8 line-aligned
// loads, one sign flip and one vpdpbusd per 4 activation values, one scale conversion and one
// rescale; the row kernel spends about three times the core time per byte and reads 4 rows as
// 4 streams. Each token's arithmetic is the strips' (q8_0_strip.h), so results do not depend on
// the token count or on how rows are split.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own cast helpers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "cpu/avx512/q8_0_strip.h"
#include "cpu/avx512/strip_driver.h"
#include "cpu/interleave.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"

namespace tandem {
namespace {

constexpr int64_t kQuantBytes = kInterleaveRows * kQK;  // one block of 16 rows: 8 vectors
constexpr int64_t kPairBytes = 2 * kInterleaveRows * static_cast<int64_t>(sizeof(BlockQ8_0));

// Block b of a group: its quants and its 16 f16 scales.
inline const uint8_t* block_quants(const uint8_t* group, int64_t b) {
  return group + (b / 2) * kPairBytes + (b % 2) * kQuantBytes;
}
inline const uint8_t* block_scales(const uint8_t* group, int64_t b) {
  return group + (b / 2) * kPairBytes + 2 * kQuantBytes +
         (b % 2) * kInterleaveRows * static_cast<int64_t>(sizeof(uint16_t));
}

// Decode streams the group once and asks for lines further on while it reads (as the row
// kernels do, tile_driver.h): while it reads pair p it asks for pair p + kPairsAhead (3264 bytes
// on), half of that pair per block it reads, at constant offsets from the pair's base and with
// one end test per pair, where asking for the line kStreamAheadBytes past each line it read
// cost a clamped address per line. Q8_0 bench decode, steps alternating in one process while
// this VM read ~55 GB/s: 2 pairs ahead 1.3-1.7% and 4 pairs 0.2-0.4% slower than 3, 6 pairs
// 3.5-6.4% slower.
constexpr int64_t kPairsAhead = 3;
constexpr int kPairLines = static_cast<int>(kPairBytes / 64);  // 17

// Lines [0, 9) of a pair while reading a pair's first block, [9, 17) while reading its second.
inline void prefetch_half_pair(const uint8_t* pair, int half) {
  for (int l = half ? 9 : 0; l < (half ? kPairLines : 9); ++l)
    __builtin_prefetch(pair + 64 * l, 0, 3);
}

// NT tokens against one group of 16 interleaved rows, straight from the weights.
template <int NT>
void q8_0_x16_tokens(const uint8_t* group, int64_t nb, const ActPack& a, int64_t t0, float* y,
                     int64_t y_stride, const uint8_t* stream_end) {
  const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t pair = 0; pair < nb / 2; ++pair) {
    const uint8_t* ahead = group + (pair + kPairsAhead) * kPairBytes;
    const bool ask_ahead = ahead + kPairBytes <= stream_end;
#pragma GCC unroll 2
    for (int half = 0; half < 2; ++half) {
      const int64_t b = 2 * pair + half;
      if (ask_ahead) prefetch_half_pair(ahead, half);
      const uint8_t* q = block_quants(group, b);
      __m512i s[NT];
      for (int t = 0; t < NT; ++t)
        s[t] = _mm512_set1_epi32(a.block_bias[(t0 + t) * a.block_bias_stride + b]);
#pragma GCC unroll 8
      for (int g = 0; g < 8; ++g) {
        const __m512i w = _mm512_xor_si512(_mm512_loadu_si512(q + 64 * g), k128);
        for (int t = 0; t < NT; ++t) {
          int32_t four;
          std::memcpy(&four, a.q + (t0 + t) * a.q_stride + b * kQK + 4 * g, 4);
          s[t] = _mm512_dpbusd_epi32(s[t], w, _mm512_set1_epi32(four));
        }
      }
      const __m512 dw = _mm512_cvtph_ps(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(block_scales(group, b))));
      for (int t = 0; t < NT; ++t) {
        const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[(t0 + t) * a.d_stride + b * 8]));
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), scale, acc[t]);
      }
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + (t0 + t) * y_stride, acc[t]);
}

// The strip of one group: its quants with the sign bits flipped, its scales as floats.
void expand_q8_0_strip(const uint8_t* group, int64_t nb, uint8_t* buf) {
  const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* q = block_quants(group, b);
    uint8_t* out = buf + b * kQ8_0StripBytes;
    for (int g = 0; g < 8; ++g) {
      _mm512_store_si512(out + 64 * g, _mm512_xor_si512(_mm512_loadu_si512(q + 64 * g), k128));
    }
    _mm512_store_ps(out + 8 * 64, _mm512_cvtph_ps(_mm256_loadu_si256(
                                      reinterpret_cast<const __m256i*>(block_scales(group, b)))));
  }
}

struct Q8_0Interleaved {
  static constexpr const char* kName = "q8_0 x16";
  static constexpr int64_t kBlockElems = kQK, kBytesPerBlock = kQ8_0StripBytes;
  static constexpr int kMaxTile = 8;
  static void expand(const uint8_t* group, int64_t nb, uint8_t* buf) {
    expand_q8_0_strip(group, nb, buf);
  }
  template <int NT>
  static void strip(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0, float* y,
                    int64_t y_stride) {
    q8_0_strip_tokens<NT>(buf, nb, a, t0, 0xFFFF, y, y_stride);
  }
  template <int NT>
  static void direct(const uint8_t* group, int64_t nb, const ActPack& a, int64_t t0, float* y,
                     int64_t y_stride, const uint8_t* stream_end) {
    q8_0_x16_tokens<NT>(group, nb, a, t0, y, y_stride, stream_end);
  }
};

const FastKernel kQ8_0_X16{ActLayout::Q8_0_S8, run_interleaved<Q8_0Interleaved>,
                           "avx512-vnni q8_0 x16", kInterleaveRows};

}  // namespace

const FastKernel* avx512_q8_0_x16_kernel() {
  return &kQ8_0_X16;
}

}  // namespace tandem
