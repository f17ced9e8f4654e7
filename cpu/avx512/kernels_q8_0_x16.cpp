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
#include <stdexcept>
#include <string>

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

// NT tokens against one group of 16 interleaved rows, straight from the weights.
template <int NT>
void q8_0_x16_tokens(const uint8_t* group, int64_t nb, const ActPack& a, int64_t t0, float* y,
                     int64_t y_stride) {
  const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
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
  for (int t = 0; t < NT; ++t) _mm512_storeu_ps(y + (t0 + t) * y_stride, acc[t]);
}

// The strip of one group: its quants with the sign bits flipped, its scales as floats.
void expand_q8_0_strip(const uint8_t* group, int64_t nb, uint8_t* buf) {
  const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* q = block_quants(group, b);
    uint8_t* out = buf + b * kStripBytesPerBlock;
    for (int g = 0; g < 8; ++g) {
      _mm512_store_si512(out + 64 * g, _mm512_xor_si512(_mm512_loadu_si512(q + 64 * g), k128));
    }
    _mm512_store_ps(out + 8 * 64, _mm512_cvtph_ps(_mm256_loadu_si256(
                                      reinterpret_cast<const __m256i*>(block_scales(group, b)))));
  }
}

// Rows [r_lo, r_hi) are whole groups (the matmul drivers split at FastKernel::row_block).
void run_q8_0_x16(const MatrixRef& w, const ActPack& a, int64_t r_lo, int64_t r_hi, int64_t t_lo,
                  int64_t t_hi, float* y, int64_t y_stride) {
  if (r_lo % kInterleaveRows != 0 || r_hi % kInterleaveRows != 0) {
    throw std::logic_error("q8_0 x16 kernel: rows [" + std::to_string(r_lo) + ", " +
                           std::to_string(r_hi) + ") split an interleaved group");
  }
  const int64_t nb = w.n_cols / kQK;
  const auto* base = static_cast<const uint8_t*>(w.data);
  // Many tokens: each group is expanded once and reused by every token tile.
  uint8_t* buf = t_hi - t_lo >= kStripMinTokens ? strip_buffer(nb * kStripBytesPerBlock) : nullptr;
  for (int64_t r0 = r_lo; r0 < r_hi; r0 += kInterleaveRows) {
    const uint8_t* group = base + r0 * w.row_stride;
    float* yr = y + r0;
    int64_t t = t_lo;
    if (buf) {
      expand_q8_0_strip(group, nb, buf);
      for (; t + 8 <= t_hi; t += 8) q8_0_strip_tokens<8>(buf, nb, a, t, 0xFFFF, yr, y_stride);
      for (; t + 4 <= t_hi; t += 4) q8_0_strip_tokens<4>(buf, nb, a, t, 0xFFFF, yr, y_stride);
      for (; t < t_hi; ++t) q8_0_strip_tokens<1>(buf, nb, a, t, 0xFFFF, yr, y_stride);
      continue;
    }
    for (; t + 4 <= t_hi; t += 4) q8_0_x16_tokens<4>(group, nb, a, t, yr, y_stride);
    for (; t < t_hi; ++t) q8_0_x16_tokens<1>(group, nb, a, t, yr, y_stride);
  }
}

const FastKernel kQ8_0_X16{ActLayout::Q8_0_S8, run_q8_0_x16, "avx512-vnni q8_0 x16",
                           kInterleaveRows};

}  // namespace

const FastKernel* avx512_q8_0_x16_kernel() {
  return &kQ8_0_X16;
}

}  // namespace tandem
