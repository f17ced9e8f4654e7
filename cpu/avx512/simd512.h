// Small AVX-512 helpers for the kernels in this folder (compiled with AVX-512 flags only).
#pragma once

#include <immintrin.h>

#include <cstdint>

namespace tandem::avx512 {

inline float hsum128(__m128 x) {
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

// Horizontal sum in a fixed order (keeps results independent of the caller).
inline float hsum512(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  const __m256 s = _mm256_add_ps(lo, hi);
  return hsum128(_mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1)));
}

// [lo | hi] from two 256-bit halves. zext avoids GCC 12's -Wuninitialized on the cast form.
inline __m512i join256(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_zextsi256_si512(lo), hi, 1);
}

inline __m512 join_broadcast(float lo, float hi) {
  return _mm512_insertf32x8(_mm512_zextps256_ps512(_mm256_set1_ps(lo)), _mm256_set1_ps(hi), 1);
}

inline float f16_scale(uint16_t h) {
  return _cvtsh_ss(h);
}

}  // namespace tandem::avx512
