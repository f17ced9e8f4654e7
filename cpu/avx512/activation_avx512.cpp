// AVX-512 element-wise activations of the forward pass.
#include <immintrin.h>

#include <cmath>
#include <cstdint>

#include "cpu/avx512/simd512.h"

namespace tandem {
namespace {

// silu(g) * u, 16 lanes: with e = e^-|g|, sigmoid(g) is 1 / (1 + e) for g >= 0 and e / (1 + e)
// below, so only e^x for x <= 0 is needed and nothing overflows.
inline __m512 swiglu16(__m512 g, __m512 u) {
  const __m512 e = avx512::exp_nonpositive(_mm512_sub_ps(_mm512_setzero_ps(), _mm512_abs_ps(g)));
  const __mmask16 negative = _mm512_cmp_ps_mask(g, _mm512_setzero_ps(), _CMP_LT_OQ);
  const __m512 numerator = _mm512_mask_mov_ps(g, negative, _mm512_mul_ps(g, e));
  const __m512 silu = _mm512_div_ps(numerator, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
  return _mm512_mul_ps(silu, u);
}

}  // namespace

void swiglu_avx512(const float* gate, const float* up, int64_t n, float* out) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    _mm512_storeu_ps(out + i, swiglu16(_mm512_loadu_ps(gate + i), _mm512_loadu_ps(up + i)));
  if (i < n) {
    const auto m = static_cast<__mmask16>((1u << (n - i)) - 1);
    _mm512_mask_storeu_ps(
        out + i, m, swiglu16(_mm512_maskz_loadu_ps(m, gate + i), _mm512_maskz_loadu_ps(m, up + i)));
  }
}

}  // namespace tandem
