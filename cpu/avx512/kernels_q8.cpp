// AVX-512 VNNI kernels for the 32-element formats Q8_0 and Q4_0 against q8_0 activations.
// vpdpbusd multiplies unsigned by signed bytes, so one operand is made unsigned:
//  - Q8_0: weights get +128 (sign bit flipped); the activation pack's corrections
//    (ActLayout::Q8_0_S8: -128 * sum(a) per lane and per block) undo it.
//  - Q4_0: weights are nibbles w + 8 (unsigned); the activation pack holds -8 * sum(a) per lane.
// Two blocks fill one 512-bit register; lanes 0-7 belong to the first, 8-15 to the second.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own cast helpers (_mm512_undefined
// idiom); the warnings point into the header, not at this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <vector>

#include "cpu/avx512/q8_0_strip.h"
#include "cpu/avx512/simd512.h"
#include "cpu/avx512/strip_driver.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"
#include "cpu/tile_driver.h"

namespace tandem {
namespace {

using avx512::f16_scale;
using avx512::hsum512;
using avx512::join256;
using avx512::join_broadcast;

// Two blocks' f16 scales as floats: lanes 0-7 the first, lanes 8-15 the second (zero when the
// row ends after the first block).
inline __m512 pair_scales(const BlockQ8_0* b, bool pair) {
  const __m128i lo = _mm_set1_epi16(static_cast<int16_t>(b[0].d));
  const __m128i hi = pair ? _mm_set1_epi16(static_cast<int16_t>(b[1].d)) : _mm_setzero_si128();
  return _mm512_cvtph_ps(_mm256_inserti128_si256(_mm256_castsi128_si256(lo), hi, 1));
}

// Adds blocks i and i + 1 of NT tokens to acc: w holds the weights (lanes 0-7 the first block,
// 8-15 the second), dw their scales; the activation pack's bias undoes the unsigned offset.
// Without `pair` the row ends after block i, and the activations above read as zero.
template <int NT>
inline void pair_tokens(__m512i w, __m512 dw, const ActPack& a, int64_t t0, int64_t i, bool pair,
                        __m512* acc) {
  for (int t = 0; t < NT; ++t) {
    const uint8_t* aq = a.q + (t0 + t) * a.q_stride + i * kQK;
    const float* ad = a.d + (t0 + t) * a.d_stride + i * 8;
    const int32_t* ab = a.bias + (t0 + t) * a.bias_stride + i * 8;
    __m512i av, bias;
    __m512 da;
    if (pair) {
      av = _mm512_loadu_si512(aq);
      bias = _mm512_loadu_si512(ab);
      da = _mm512_loadu_ps(ad);
    } else {
      av = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq)));
      bias = _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab)));
      da = _mm512_zextps256_ps512(_mm256_loadu_ps(ad));
    }
    const __m512i s = _mm512_dpbusd_epi32(bias, w, av);
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(dw, da), acc[t]);
  }
}

// Q8_0 rows (decode): per pair of blocks, two weight loads, one sign-bit flip, one vpdpbusd
// seeded with the activation's correction, and the float rescale; nothing is computed per row
// that the activation pack could hold instead, which keeps the kernel ahead of DRAM.
template <int NT>
struct Q8_0Row {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    const auto* b = reinterpret_cast<const BlockQ8_0*>(row);
    const int64_t nb = n_cols / kQK;
    const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i += 2) {
      prefetch_ahead<1>(b + i);
      const bool pair = i + 1 < nb;  // an odd last block runs with zero activations above
      const __m256i w_hi = pair ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i + 1].qs))
                                : _mm256_setzero_si256();
      const __m512i w = _mm512_xor_si512(
          join256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[i].qs)), w_hi), k128);
      const __m512 dw = pair_scales(b + i, pair);
      pair_tokens<NT>(w, dw, a, t0, i, pair, acc);
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum512(acc[t]);
  }

  // One token against NR rows at once (decode): the same arithmetic per row as run<1>, with the
  // activation loads shared and NR independent accumulator chains in flight.
  template <int NR>
  static void rows(const uint8_t* row0, int64_t row_stride, const ActPack& a, int64_t t,
                   int64_t n_cols, float* out) {
    const int64_t nb = n_cols / kQK;
    const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
    const uint8_t* aq = a.q + t * a.q_stride;
    const float* ad = a.d + t * a.d_stride;
    const int32_t* ab = a.bias + t * a.bias_stride;
    // Each line is requested one pass ahead: where the next NR rows will read it.
    const int64_t ahead = NR * row_stride;
    __m512 acc[NR];
    for (int r = 0; r < NR; ++r) acc[r] = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 2 <= nb; i += 2) {
      const __m512i av = _mm512_loadu_si512(aq + i * kQK);
      const __m512i bias = _mm512_loadu_si512(ab + i * 8);
      const __m512 da = _mm512_loadu_ps(ad + i * 8);
      for (int r = 0; r < NR; ++r) {
        const auto* b = reinterpret_cast<const BlockQ8_0*>(row0 + r * row_stride) + i;
        __builtin_prefetch(reinterpret_cast<const uint8_t*>(b) + ahead, 0, 3);
        const __m512i w =
            _mm512_xor_si512(join256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs)),
                                     _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[1].qs))),
                             k128);
        const __m512i s = _mm512_dpbusd_epi32(bias, w, av);
        acc[r] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(pair_scales(b, true), da), acc[r]);
      }
    }
    if (i < nb) {  // an odd last block, with zero activations above as in run
      const __m512i av = _mm512_zextsi256_si512(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(aq + i * kQK)));
      const __m512i bias =
          _mm512_zextsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(ab + i * 8)));
      const __m512 da = _mm512_zextps256_ps512(_mm256_loadu_ps(ad + i * 8));
      for (int r = 0; r < NR; ++r) {
        const auto* b = reinterpret_cast<const BlockQ8_0*>(row0 + r * row_stride) + i;
        const __m512i w =
            _mm512_xor_si512(join256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(b[0].qs)),
                                     _mm256_setzero_si256()),
                             k128);
        const __m512i s = _mm512_dpbusd_epi32(bias, w, av);
        acc[r] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(s), _mm512_mul_ps(pair_scales(b, false), da),
                                 acc[r]);
      }
    }
    for (int r = 0; r < NR; ++r) out[r] = hsum512(acc[r]);
  }
};

// Transposes blocks [0, nb) of rows r0.. (rows outside `valid` read as zero) into buf: per block
// 8 weight vectors with the sign bits flipped (w + 128) and the 16 row scales.
void pack_q8_0_strip(const MatrixRef& m, int64_t r0, __mmask16 valid, int64_t nb, uint8_t* buf) {
  const __m512i offsets = strip_row_offsets(m.row_stride);
  const auto* base = static_cast<const uint8_t*>(m.data) + r0 * m.row_stride;
  const __m512i k128 = _mm512_set1_epi8(static_cast<char>(0x80));
  const __m512i zero = _mm512_setzero_si512();
  for (int64_t b = 0; b < nb; ++b) {
    const uint8_t* blk = base + b * static_cast<int64_t>(sizeof(BlockQ8_0));
    uint8_t* out = buf + b * kQ8_0StripBytes;
    for (int g = 0; g < 8; ++g) {
      const __m512i v = _mm512_mask_i32gather_epi32(zero, valid, offsets, blk + 2 + 4 * g, 1);
      _mm512_store_si512(out + 64 * g, _mm512_xor_si512(v, k128));
    }
    const __m512i d16 = _mm512_mask_i32gather_epi32(zero, valid, offsets, blk, 1);
    _mm512_store_ps(out + 8 * 64, _mm512_cvtph_ps(_mm512_cvtepi32_epi16(d16)));
  }
}

struct Q8_0Strip {
  static constexpr int64_t kBlockElems = kQK, kBytesPerBlock = kQ8_0StripBytes;
  static constexpr int kMaxTile = 8;
  static void pack(const MatrixRef& m, int64_t r0, __mmask16 valid, int64_t nb, uint8_t* buf) {
    pack_q8_0_strip(m, r0, valid, nb, buf);
  }
  template <int NT>
  static void tokens(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0, __mmask16 valid,
                     float* y, int64_t y_stride) {
    q8_0_strip_tokens<NT>(buf, nb, a, t0, valid, y, y_stride);
  }
};

// 32 nibbles of one block as bytes in element order (low nibbles = elements 0-15).
inline __m256i q4_0_block(const BlockQ4_0& blk) {
  const __m128i x = _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk.qs));
  const __m128i m = _mm_set1_epi8(0x0F);
  return _mm256_inserti128_si256(_mm256_castsi128_si256(_mm_and_si128(x, m)),
                                 _mm_and_si128(_mm_srli_epi16(x, 4), m), 1);
}

template <int NT>
struct Q4_0Row {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    const auto* b = reinterpret_cast<const BlockQ4_0*>(row);
    const int64_t nb = n_cols / kQK;
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < nb; i += 2) {
      prefetch_ahead<1>(b + i);
      const bool pair = i + 1 < nb;
      const __m512i w =
          join256(q4_0_block(b[i]), pair ? q4_0_block(b[i + 1]) : _mm256_setzero_si256());
      const __m512 dw = join_broadcast(f16_scale(b[i].d), pair ? f16_scale(b[i + 1].d) : 0.0f);
      pair_tokens<NT>(w, dw, a, t0, i, pair, acc);
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum512(acc[t]);
  }
};

const FastKernel kQ8_0{ActLayout::Q8_0_S8, run_strips<Q8_0Strip, Q8_0Row>, "avx512-vnni q8_0"};
const FastKernel kQ4_0{ActLayout::Q8_0_I8, run_tiles<Q4_0Row>, "avx512-vnni q4_0"};

}  // namespace

const FastKernel* avx512_q8_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::Q8_0:
      return &kQ8_0;
    case GgmlType::Q4_0:
      return &kQ4_0;
    default:
      return nullptr;
  }
}

}  // namespace tandem
