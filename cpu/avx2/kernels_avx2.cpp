// AVX2 fallback kernels (no AVX-512): Q8_0 with the sign trick (vpsignb + vpmaddubsw), F32 and
// F16 with FMA. Activations for Q8_0 use ActLayout::Q8_0_I8 (bias unused).
#include <immintrin.h>

#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"
#include "cpu/tile_driver.h"

namespace tandem {
namespace {

float hsum256(__m256 v) {
  __m128 x = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  x = _mm_add_ps(x, _mm_movehl_ps(x, x));
  x = _mm_add_ss(x, _mm_movehdup_ps(x));
  return _mm_cvtss_f32(x);
}

template <int NT>
struct Avx2Q8_0Row {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(row);
    const __m256i ones = _mm256_set1_epi16(1);
    __m256 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
    for (int64_t i = 0; i < n_cols / kQK; ++i) {
      prefetch_ahead<1>(b + i);
      const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs));
      const __m256i w_abs = _mm256_sign_epi8(w, w);
      const __m256 dw = _mm256_set1_ps(_cvtsh_ss(b[i].d));
      for (int t = 0; t < NT; ++t) {
        const uint8_t* aq = a.q + (t0 + t) * a.q_stride + i * kQK;
        const __m256i x = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq));
        const __m256i p16 = _mm256_maddubs_epi16(w_abs, _mm256_sign_epi8(x, w));
        const __m256 s = _mm256_cvtepi32_ps(_mm256_madd_epi16(p16, ones));
        const __m256 scale = _mm256_mul_ps(dw, _mm256_set1_ps(a.d[(t0 + t) * a.d_stride + i * 8]));
        acc[t] = _mm256_fmadd_ps(s, scale, acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum256(acc[t]);
  }
};

template <bool kHalf>
struct Avx2FloatRow {
  template <int NT>
  struct Kernel {
    static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
      __m256 acc[NT];
      for (int t = 0; t < NT; ++t) acc[t] = _mm256_setzero_ps();
      int64_t i = 0;
      for (; i + 8 <= n_cols; i += 8) {
        prefetch_ahead<1>(row + i * (kHalf ? 2 : 4));
        const __m256 w = kHalf ? _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(
                                     reinterpret_cast<const uint16_t*>(row) + i)))
                               : _mm256_loadu_ps(reinterpret_cast<const float*>(row) + i);
        for (int t = 0; t < NT; ++t) {
          const float* x = reinterpret_cast<const float*>(a.q + (t0 + t) * a.q_stride) + i;
          acc[t] = _mm256_fmadd_ps(w, _mm256_loadu_ps(x), acc[t]);
        }
      }
      for (int t = 0; t < NT; ++t) {
        float s = hsum256(acc[t]);
        const float* x = reinterpret_cast<const float*>(a.q + (t0 + t) * a.q_stride);
        for (int64_t j = i; j < n_cols; ++j) {
          const float wj = kHalf ? _cvtsh_ss(reinterpret_cast<const uint16_t*>(row)[j])
                                 : reinterpret_cast<const float*>(row)[j];
          s += wj * x[j];
        }
        out[t] = s;
      }
    }
  };
};

template <int NT>
using Avx2F32Row = Avx2FloatRow<false>::Kernel<NT>;
template <int NT>
using Avx2F16Row = Avx2FloatRow<true>::Kernel<NT>;

const FastKernel kQ8_0{ActLayout::Q8_0_I8, run_tiles<Avx2Q8_0Row>, "avx2 q8_0"};
const FastKernel kF32{ActLayout::F32, run_tiles<Avx2F32Row>, "avx2 f32"};
const FastKernel kF16{ActLayout::F16, run_tiles<Avx2F16Row>, "avx2 f16"};

}  // namespace

const FastKernel* avx2_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0:
      return &kQ8_0;
    case GgmlType::F32:
      return &kF32;
    case GgmlType::F16:
      return &kF16;
    default:
      return nullptr;
  }
}

}  // namespace tandem
