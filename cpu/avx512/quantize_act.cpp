// AVX-512 quantization of activation rows to q8_0 and q8_K: the same numbers as the reference
// quantizers in cpu/quant.cpp and cpu/quant_kquants.cpp (the scale is computed by the same
// scalar expressions, every product is one float multiply, and conversion rounds half to even
// like nearbyint), only sixteen elements at a time. Prefill packs every gathered expert row,
// so the scalar loops would otherwise cost several percent of a prompt.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/half.h"
#include "cpu/quant_blocks.h"

namespace tandem {
namespace {

inline __m512 abs512(__m512 v) {
  return _mm512_castsi512_ps(
      _mm512_and_si512(_mm512_castps_si512(v), _mm512_set1_epi32(0x7FFFFFFF)));
}

// Lanes' maximum; max is exact and order-free, so this equals the scalar loop's result.
inline float max_lanes(__m512 v) {
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, v);
  float m = lanes[0];
  for (int i = 1; i < 16; ++i) m = m > lanes[i] ? m : lanes[i];
  return m;
}

// Sixteen floats times `scale`, rounded half to even, stored as int8 (values lie in +-127).
inline __m512i round_store16(const float* x, __m512 scale, int8_t* out) {
  const __m512i q = _mm512_cvt_roundps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x), scale),
                                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(out), _mm512_cvtsepi32_epi8(q));
  return q;
}

}  // namespace

void quantize_q8_0_avx512(const float* x, BlockQ8_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
    const float amax = max_lanes(_mm512_max_ps(abs512(lo), abs512(hi)));
    y[i].d = fp32_to_fp16(amax / 127.f);
    const __m512 id = _mm512_set1_ps(amax != 0 ? 127.f / amax : 0.0f);
    round_store16(x, id, y[i].qs);
    round_store16(x + 16, id, y[i].qs + 16);
  }
}

void quantize_q8_k_avx512(const float* x, BlockQ8K* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQKK) {
    __m512 m = _mm512_setzero_ps();
    for (int l = 0; l < kQKK; l += 16) m = _mm512_max_ps(m, abs512(_mm512_loadu_ps(x + l)));
    const float amax = max_lanes(m);
    if (amax == 0) {
      y[i].d = 0;
      for (int8_t& q : y[i].qs) q = 0;
      for (int16_t& s : y[i].bsums) s = 0;
      continue;
    }
    // The first element of largest magnitude, with its sign (its sign picks the scale's).
    float vmax = 0;
    for (int l = 0; l < kQKK; ++l) {
      if (std::fabs(x[l]) == amax) {
        vmax = x[l];
        break;
      }
    }
    const float iscale = -127.f / vmax;
    const __m512 scale = _mm512_set1_ps(iscale);
    const __m512i cap = _mm512_set1_epi32(127);
    for (int j = 0; j < kQKK / 16; ++j) {
      const __m512 v = _mm512_mul_ps(_mm512_loadu_ps(x + 16 * j), scale);
      const __m512i q = _mm512_min_epi32(
          _mm512_cvt_roundps_epi32(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), cap);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(y[i].qs + 16 * j), _mm512_cvtsepi32_epi8(q));
      y[i].bsums[j] = static_cast<int16_t>(_mm512_reduce_add_epi32(q));
    }
    y[i].d = 1 / iscale;
  }
}

}  // namespace tandem
