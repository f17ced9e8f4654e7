// The 16-row strip of Q8_0 (strip_driver.h), shared by the file-layout kernel, which transposes
// rows into it, and the Q8_0_X16 kernel, which copies its groups into it. Included only from
// cpu/avx512/*.cpp (unnamed namespace).
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "cpu/avx512/simd512.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"

namespace tandem {
namespace {

// Q8_0 with many tokens (strip_driver.h): each block of 16 rows becomes 8 vectors whose int32
// lane r holds 4 quants (+128) of row r, so one vpdpbusd with a broadcast of 4 activation quants
// advances 16 rows, and the float rescale (convert, scale, fma) runs once per block for 16
// rows instead of once per 2 blocks per row.
constexpr int64_t kQ8_0StripBytes = 9 * 64;  // 8 weight vectors, scales

template <int NT>
void q8_0_strip_tokens(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0,
                       __mmask16 valid, float* y, int64_t y_stride) {
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = buf + b * kQ8_0StripBytes;
    __m512i s[NT];
    for (int t = 0; t < NT; ++t)
      s[t] = _mm512_set1_epi32(a.block_bias[(t0 + t) * a.block_bias_stride + b]);
    for (int g = 0; g < 8; ++g) {
      const __m512i w = _mm512_load_si512(blk + 64 * g);
      for (int t = 0; t < NT; ++t) {
        s[t] = avx512::dpbusd_broadcast(s[t], w, a.q + (t0 + t) * a.q_stride + b * kQK + 4 * g);
      }
    }
    const __m512 dw = _mm512_load_ps(blk + 8 * 64);
    for (int t = 0; t < NT; ++t) {
      const __m512 scale = _mm512_mul_ps(dw, _mm512_set1_ps(a.d[(t0 + t) * a.d_stride + b * 8]));
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s[t]), scale, acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * y_stride, valid, acc[t]);
}

}  // namespace
}  // namespace tandem
