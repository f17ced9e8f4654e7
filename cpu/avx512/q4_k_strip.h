// Q4_K for 16 rows at a time, shared by the file-layout kernels (kernels_k.cpp: strips gathered
// from 16 rows for products of many tokens) and the interleaved layout (kernels_q4_k_x16.cpp).
// Each super-block of 16 rows becomes, per 32-element sub-block (in the activations' permuted
// order), 8 vectors whose int32 lane r holds 4 quants of row r as bytes, the 16 rows' 6-bit
// scales, the mins as int16 pairs, and d/dmin. Per token, vpdpbusd with broadcast activation
// quants gives exact per-sub-block sums for 16 rows; scales and mins are applied in int32 and
// one float step per super-block follows. Results do not depend on how work is split.
// Included only from cpu/avx512/*.cpp (unnamed namespace, as tile_driver.h explains).
#pragma once

#include <immintrin.h>

#include <cstddef>
#include <cstdint>
#include <cstring>

#include "cpu/avx512/simd512.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"

namespace tandem {
namespace {

constexpr int64_t kK4StripVectors = 64 + 8 + 4 + 2;  // quants, scales, min pairs, d/dmin
// Sub-block held by each 32-element chunk of ActLayout::Q8_K_PERM activations (its own inverse).
constexpr int kK4Perm[8] = {0, 2, 1, 3, 4, 6, 5, 7};

// The eight 6-bit scales and mins of 16 rows from the three 4-byte words a, b, c of their packed
// scale bytes (see k4_scale_min): scales 0-3 = a & 63, scales 4-7 = (c & 15) | (a >> 6) << 4,
// mins 0-3 = b & 63, mins 4-7 = (c >> 4) | (b >> 6) << 4, bytewise. Scales come one int32 lane
// per row; mins as int16 pairs (min 2q, min 2q+1) per lane, against the activations'
// natural-order sums. Bitwise selects (vpternlogd) and byte shuffles make this about 30 vector
// operations per super-block; shifts and masks alone took about 60.
inline void k4_scales_min_pairs(__m512i a, __m512i b, __m512i c, __m512i* scale,
                                __m512i* min_pair) {
  constexpr int kSelect = 0xCA;  // vpternlogd: mask ? x : y, bit by bit
  const __m512i six = _mm512_set1_epi32(63);
  // Byte j of a lane holds bits 6-7 of a's byte j in its bits 4-5 (bits 6-7: the next byte's).
  const __m512i a_high = _mm512_srli_epi32(a, 2);
  for (int j = 0; j < 4; ++j) {
    scale[j] = _mm512_and_si512(_mm512_srli_epi32(a, 8 * j), six);
    const __m512i low_nibble_of_byte_j = _mm512_set1_epi32(0x0F << (8 * j));
    const __m512i merged = _mm512_ternarylogic_epi32(low_nibble_of_byte_j, c, a_high, kSelect);
    scale[j + 4] = _mm512_and_si512(_mm512_srli_epi32(merged, 8 * j), six);
  }
  // Bytes j and j + 1 of each lane moved to the lane's two int16 halves: vpshufb indices per
  // dword k of a 128-bit lane are 4k + j, none, 4k + j + 1, none (0x80 writes a zero).
  auto spread = [](__m512i v, int j) {
    auto dword = [j](int k) {
      return static_cast<int>(0x80008000u | static_cast<unsigned>((4 * k + j + 1) << 16) |
                              static_cast<unsigned>(4 * k + j));
    };
    return _mm512_shuffle_epi8(v, _mm512_setr4_epi32(dword(0), dword(1), dword(2), dword(3)));
  };
  const __m512i six_pair = _mm512_set1_epi32(0x003F003F),
                nibble_pair = _mm512_set1_epi32(0x000F000F);
  for (int q = 0; q < 2; ++q) {
    min_pair[q] = _mm512_and_si512(spread(b, 2 * q), six_pair);
    // (c >> 4) in bits 0-3 of each int16, b's bits 6-7 in bits 4-5 (b >> 2 has 6 bits there).
    min_pair[q + 2] = _mm512_ternarylogic_epi32(nibble_pair, _mm512_srli_epi16(spread(c, 2 * q), 4),
                                                _mm512_srli_epi16(spread(b, 2 * q), 2), kSelect);
  }
}

// d (low half) and dmin (high half) of the block's first 4-byte word, as floats.
inline __m512 k4_d(__m512i dd) {
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(dd));
}
inline __m512 k4_dmin(__m512i dd) {
  return _mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16)));
}

// Expands blocks [0, nb) of 16 rows into buf. `rows.word(i, offset)` gives, in lane r, the
// 4-byte word at byte `offset` of row r's block i (offsets are multiples of 4).
template <class Rows>
void expand_q4_k_strip(const Rows& rows, int64_t nb, uint8_t* buf) {
  auto* out = reinterpret_cast<__m512i*>(buf);
  const __m512i nib = _mm512_set1_epi8(0x0F);
  for (int64_t i = 0; i < nb; ++i) {
    __m512i* o = out + i * kK4StripVectors;
    for (int p = 0; p < 8; ++p) {
      const int sb = kK4Perm[p];
      const int64_t qs = offsetof(BlockQ4K, qs) + 32 * (sb / 2);
      for (int g = 0; g < 8; ++g) {
        const __m512i v = rows.word(i, qs + 4 * g);
        o[8 * p + g] = _mm512_and_si512(sb % 2 ? _mm512_srli_epi16(v, 4) : v, nib);
      }
    }
    const int64_t sc = offsetof(BlockQ4K, scales);
    __m512i scale[8], min_pair[4];
    k4_scales_min_pairs(rows.word(i, sc), rows.word(i, sc + 4), rows.word(i, sc + 8), scale,
                        min_pair);
    for (int p = 0; p < 8; ++p) o[64 + p] = scale[kK4Perm[p]];
    for (int q = 0; q < 4; ++q) o[72 + q] = min_pair[q];
    const __m512i dd = rows.word(i, 0);
    o[76] = _mm512_castps_si512(k4_d(dd));
    o[77] = _mm512_castps_si512(k4_dmin(dd));
  }
}

// The float step of a super-block, shared so both layouts round alike.
inline __m512 k4_accumulate(__m512 acc, __m512i scaled, __m512i mins, __m512 d, __m512 dmin,
                            float da) {
  const __m512 vda = _mm512_set1_ps(da);
  acc = _mm512_fmadd_ps(_mm512_cvtepi32_ps(scaled), _mm512_mul_ps(d, vda), acc);
  return _mm512_fnmadd_ps(_mm512_cvtepi32_ps(mins), _mm512_mul_ps(dmin, vda), acc);
}

template <int NT>
void q4_k_strip_tokens(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0,
                       __mmask16 valid, float* y, int64_t y_stride) {
  const auto* strip = reinterpret_cast<const __m512i*>(buf);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m512i* o = strip + i * kK4StripVectors;
    __m512i scaled[NT], mins[NT];
    for (int t = 0; t < NT; ++t) scaled[t] = mins[t] = _mm512_setzero_si512();
    for (int p = 0; p < 8; ++p) {
      __m512i sum[NT];
      for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
      for (int g = 0; g < 8; ++g) {
        const __m512i w = _mm512_load_si512(o + 8 * p + g);
        for (int t = 0; t < NT; ++t) {
          sum[t] = avx512::dpbusd_broadcast(
              sum[t], w, a.q + (t0 + t) * a.q_stride + i * kQKK + 32 * p + 4 * g);
        }
      }
      const __m512i sc = _mm512_load_si512(o + 64 + p);
      for (int t = 0; t < NT; ++t)
        scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(sum[t], sc));
    }
    for (int q = 0; q < 4; ++q) {
      const __m512i mp = _mm512_load_si512(o + 72 + q);
      for (int t = 0; t < NT; ++t) {
        int32_t pair;
        std::memcpy(&pair, a.sums + (t0 + t) * a.sums_stride + i * 8 + 2 * q, 4);
        mins[t] = _mm512_dpwssd_epi32(mins[t], mp, _mm512_set1_epi32(pair));
      }
    }
    const __m512 d = _mm512_castsi512_ps(_mm512_load_si512(o + 76));
    const __m512 dmin = _mm512_castsi512_ps(_mm512_load_si512(o + 77));
    for (int t = 0; t < NT; ++t)
      acc[t] = k4_accumulate(acc[t], scaled[t], mins[t], d, dmin, a.d[(t0 + t) * a.d_stride + i]);
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * y_stride, valid, acc[t]);
}

}  // namespace
}  // namespace tandem
