// f32 rows to f16 with vcvtps2ph, which rounds to nearest even like fp32_to_fp16.
#include <immintrin.h>

#include <cstdint>

namespace tandem {

namespace {

// f(h, i, mask) gets x[i..i + 16) as f16 bits, the last vector under a mask.
template <class F>
void for_fp16_vectors(const float* x, int64_t n, F&& f) {
  constexpr int kRound = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16)
    f(_mm512_cvtps_ph(_mm512_loadu_ps(x + i), kRound), i, __mmask16(0xffff));
  if (i < n) {
    const auto m = static_cast<__mmask16>((1u << (n - i)) - 1);
    f(_mm512_cvtps_ph(_mm512_maskz_loadu_ps(m, x + i), kRound), i, m);
  }
}

}  // namespace

void to_fp16_row_avx512(const float* x, int64_t n, uint16_t* out) {
  for_fp16_vectors(
      x, n, [&](__m256i h, int64_t i, __mmask16 m) { _mm256_mask_storeu_epi16(out + i, m, h); });
}

void round_fp16_row_avx512(const float* x, int64_t n, float* out) {
  for_fp16_vectors(x, n, [&](__m256i h, int64_t i, __mmask16 m) {
    _mm512_mask_storeu_ps(out + i, m, _mm512_cvtph_ps(h));
  });
}

}  // namespace tandem
