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

// e^x for x <= 0 (attention scores minus their max, silu of |x|): x = n ln2 + r, |r| <= ln2/2,
// degree-7 Taylor polynomial in r (relative error ~1e-7), then scaled by 2^n.
inline __m512 exp_nonpositive(__m512 x) {
  x = _mm512_max_ps(x, _mm512_set1_ps(-103.0f));  // below this e^x is 0 in float
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 5040);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 720));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// acc + vpdpbusd(w, the 4 signed bytes at `four` in every lane), the bytes broadcast by the
// instruction itself ({1to16}). GCC 12 never folds _mm512_set1_epi32 into vpdpbusd; it emits a
// separate vpbroadcastd for each, which costs the many-token strips (one per token and vector)
// an extra instruction per product. The one-token x16 kernels keep the separate broadcast: their
// reads set the pace, and a Q4_K variant with this and one load per word, 20-33% faster from
// cache, decoded 2-4% slower (README, "Performance").
inline __m512i dpbusd_broadcast(__m512i acc, __m512i w, const uint8_t* four) {
  asm("vpdpbusd %2%{1to16%}, %1, %0"
      : "+v"(acc)
      : "v"(w), "m"(*reinterpret_cast<const int32_t*>(four)));
  return acc;
}

inline float f16_scale(uint16_t h) {
  return _cvtsh_ss(h);
}

}  // namespace tandem::avx512
