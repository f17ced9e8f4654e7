// AVX-512 kernels for float weights: F32 (FMA), F16 (F16C conversion + FMA; activations are
// f16-rounded f32) and BF16 (vdpbf16ps, bf16 activations). Also the AVX-512 kernel table.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own cast helpers (_mm512_undefined
// idiom); the warnings point into the header, not at this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include "cpu/avx512/simd512.h"
#include "cpu/kernels.h"
#include "cpu/tile_driver.h"

namespace tandem {

const FastKernel* avx512_q8_kernel(GgmlType type);  // kernels_q8.cpp
const FastKernel* avx512_k_kernel(GgmlType type);   // kernels_k.cpp
const FastKernel* avx512_q4_k_x16_kernel();          // kernels_q4_k_x16.cpp
const FastKernel* avx512_q8_0_x16_kernel();          // kernels_q8_0_x16.cpp

namespace {

using avx512::hsum512;

// Loads 16 weights as f32; `n` < 16 loads a zero-padded tail.
struct LoadF32 {
  static constexpr int64_t kBytes = 4;
  static __m512 load(const uint8_t* row, int64_t i, __mmask16 m) {
    return _mm512_maskz_loadu_ps(m, reinterpret_cast<const float*>(row) + i);
  }
};
struct LoadF16 {
  static constexpr int64_t kBytes = 2;
  static __m512 load(const uint8_t* row, int64_t i, __mmask16 m) {
    const __m256i h = _mm256_maskz_loadu_epi16(m, reinterpret_cast<const uint16_t*>(row) + i);
    return _mm512_cvtph_ps(h);
  }
};

template <class Load>
struct FloatRow {
  template <int NT>
  struct Kernel {
    static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
      __m512 acc[NT];
      for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
      for (int64_t i = 0; i < n_cols; i += 16) {
        const __mmask16 m = n_cols - i >= 16 ? static_cast<__mmask16>(0xFFFF)
                                             : static_cast<__mmask16>((1u << (n_cols - i)) - 1);
        prefetch_ahead<1>(row + i * Load::kBytes);
        const __m512 w = Load::load(row, i, m);
        for (int t = 0; t < NT; ++t) {
          const float* x = reinterpret_cast<const float*>(a.q + (t0 + t) * a.q_stride) + i;
          acc[t] = _mm512_fmadd_ps(w, _mm512_maskz_loadu_ps(m, x), acc[t]);
        }
      }
      for (int t = 0; t < NT; ++t) out[t] = hsum512(acc[t]);
    }
  };
};

template <int NT>
using F32Row = FloatRow<LoadF32>::Kernel<NT>;
template <int NT>
using F16Row = FloatRow<LoadF16>::Kernel<NT>;

__attribute__((target("avx512bf16"))) __m512 dot_bf16(__m512 acc, __m512i w, __m512i x) {
  return _mm512_dpbf16_ps(acc, reinterpret_cast<__m512bh&>(w), reinterpret_cast<__m512bh&>(x));
}

template <int NT>
struct Bf16Row {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    const auto* w16 = reinterpret_cast<const uint16_t*>(row);
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n_cols; i += 32) {
      const __mmask32 m = n_cols - i >= 32 ? ~__mmask32{0} : ((__mmask32{1} << (n_cols - i)) - 1);
      prefetch_ahead<1>(w16 + i);
      const __m512i w = _mm512_maskz_loadu_epi16(m, w16 + i);
      for (int t = 0; t < NT; ++t) {
        const auto* x = reinterpret_cast<const uint16_t*>(a.q + (t0 + t) * a.q_stride) + i;
        acc[t] = dot_bf16(acc[t], w, _mm512_maskz_loadu_epi16(m, x));
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum512(acc[t]);
  }
};

const FastKernel kF32{ActLayout::F32, run_tiles<F32Row>, "avx512 f32"};
const FastKernel kF16{ActLayout::F16, run_tiles<F16Row>, "avx512 f16"};
const FastKernel kBF16{ActLayout::BF16, run_tiles<Bf16Row>, "avx512-bf16 bf16"};

}  // namespace

const FastKernel* avx512_kernel(GgmlType type, bool has_bf16) {
  switch (type) {
    case GgmlType::F32:
      return &kF32;
    case GgmlType::F16:
      return &kF16;
    case GgmlType::BF16:
      return has_bf16 ? &kBF16 : nullptr;
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
      return avx512_q8_kernel(type);
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return avx512_k_kernel(type);
    case GgmlType::Q4_K_X16:
      return avx512_q4_k_x16_kernel();
    case GgmlType::Q8_0_X16:
      return avx512_q8_0_x16_kernel();
    default:
      return nullptr;
  }
}

}  // namespace tandem
