// AVX-512 kernels for the K-quants (Q4_K, Q5_K, Q6_K) against q8_K activations.
// Weights are small unsigned integers, so vpmaddubsw (u8 x s8 -> s16 pairs) is exact, and
// vpdpwssd applies the per-sub-block scales while accumulating in int32 over a super-block.
// GCC 12's AVX-512 headers trip -Wmaybe-uninitialized in their own cast helpers (_mm512_undefined
// idiom); the warnings point into the header, not at this code.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <climits>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "cpu/avx512/q4_k_strip.h"
#include "cpu/avx512/simd512.h"
#include "cpu/avx512/strip_driver.h"
#include "cpu/kernels.h"
#include "cpu/quant_blocks.h"
#include "cpu/tile_driver.h"

namespace tandem {
namespace {

using avx512::f16_scale;
using avx512::hsum128;
using avx512::hsum512;
using avx512::join256;

// Decoded Q4_K/Q5_K super-block: 4 vectors of 64 quants in the order of ActLayout::Q8_K_PERM
// (sub-blocks 0|2, 1|3, 4|6, 5|7) with matching int16 scale vectors, and the mins.
struct DecodedK4 {
  __m512i q[4];
  __m512i scale[4];
  __m128i mins;  // 8 x int16
  float d, dmin;
};

// The 12 packed bytes hold eight 6-bit scales and eight 6-bit mins (see k4_scale_min). Viewed
// as three little-endian words a, b, c: scales 0-3 = a & 63, scales 4-7 = (c & 15) | (a >> 6) << 4,
// mins 0-3 = b & 63, mins 4-7 = (c >> 4) | (b >> 6) << 4, bytewise. Done on 32-bit words; the
// eight int16 scales are then broadcast to the four 128-bit lanes and vpshufb (in-lane, cheaper
// than a cross-lane vpermw) picks each lane's scale: lanes 0-1 of vector k hold the first
// sub-block of its pair, lanes 2-3 the second.
struct ScaleIndex {
  __m512i pairs[4];
  ScaleIndex() {
    static constexpr int kPairs[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
    for (int k = 0; k < 4; ++k) {
      alignas(64) int8_t idx[64];
      for (int j = 0; j < 64; ++j) idx[j] = static_cast<int8_t>(2 * kPairs[k][j / 32] + j % 2);
      pairs[k] = _mm512_load_si512(idx);
    }
  }
};

inline void decode_scales(const uint8_t* packed, const ScaleIndex& index, DecodedK4* out) {
  uint32_t a, b, c;
  std::memcpy(&a, packed, 4);
  std::memcpy(&b, packed + 4, 4);
  std::memcpy(&c, packed + 8, 4);
  constexpr uint32_t k6 = 0x3f3f3f3f, k4 = 0x0f0f0f0f, k2 = 0x03030303;
  const uint32_t sc_lo = a & k6;
  const uint32_t sc_hi = (c & k4) | (((a >> 6) & k2) << 4);
  const uint32_t m_lo = b & k6;
  const uint32_t m_hi = ((c >> 4) & k4) | (((b >> 6) & k2) << 4);
  const __m128i sc8 = _mm_cvtsi64_si128(static_cast<int64_t>(sc_lo | (uint64_t{sc_hi} << 32)));
  const __m128i m8 = _mm_cvtsi64_si128(static_cast<int64_t>(m_lo | (uint64_t{m_hi} << 32)));
  const __m512i sc16 = _mm512_broadcast_i32x4(_mm_cvtepu8_epi16(sc8));
  for (int k = 0; k < 4; ++k) out->scale[k] = _mm512_shuffle_epi8(sc16, index.pairs[k]);
  out->mins = _mm_cvtepu8_epi16(m8);
}

inline void decode_nibbles(const uint8_t* qs, DecodedK4* out) {
  const __m512i mask = _mm512_set1_epi8(0x0F);
  const __m512i q0 = _mm512_loadu_si512(qs);
  const __m512i q1 = _mm512_loadu_si512(qs + 64);
  out->q[0] = _mm512_and_si512(q0, mask);
  out->q[1] = _mm512_and_si512(_mm512_srli_epi16(q0, 4), mask);
  out->q[2] = _mm512_and_si512(q1, mask);
  out->q[3] = _mm512_and_si512(_mm512_srli_epi16(q1, 4), mask);
}

// Adds 16 to the quants whose fifth bit is set in qh (Q5_K).
inline void add_high_bits(const uint8_t* qh_bytes, DecodedK4* out) {
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh_bytes));
  const __m512i qhv = join256(qh, qh);
  const __m512i sixteen = _mm512_set1_epi8(16);
  static constexpr int kBits[4][2] = {{0, 2}, {1, 3}, {4, 6}, {5, 7}};
  for (int k = 0; k < 4; ++k) {
    const __m512i sel = join256(_mm256_set1_epi8(static_cast<char>(1 << kBits[k][0])),
                                _mm256_set1_epi8(static_cast<char>(1 << kBits[k][1])));
    const __mmask64 set = _mm512_test_epi8_mask(qhv, sel);
    out->q[k] = _mm512_mask_add_epi8(out->q[k], set, out->q[k], sixteen);
  }
}

// Accumulates one decoded super-block against NT tokens.
template <int NT>
inline void dot_k4(const DecodedK4& w, const ActPack& a, int64_t t0, int64_t i, __m512* acc,
                   __m128* min_acc) {
  for (int t = 0; t < NT; ++t) {
    const uint8_t* aq = a.q + (t0 + t) * a.q_stride + i * kQKK;
    // Two independent chains: vpdpwssd latency, not throughput, limits a single token.
    __m512i even = _mm512_setzero_si512(), odd = _mm512_setzero_si512();
    for (int k = 0; k < 4; k += 2) {
      const __m512i p0 = _mm512_maddubs_epi16(w.q[k], _mm512_loadu_si512(aq + 64 * k));
      const __m512i p1 = _mm512_maddubs_epi16(w.q[k + 1], _mm512_loadu_si512(aq + 64 * k + 64));
      even = _mm512_dpwssd_epi32(even, p0, w.scale[k]);
      odd = _mm512_dpwssd_epi32(odd, p1, w.scale[k + 1]);
    }
    const __m512i isum = _mm512_add_epi32(even, odd);
    const float da = a.d[(t0 + t) * a.d_stride + i];
    acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(w.d * da), acc[t]);
    const __m128i sums = _mm_loadu_si128(
        reinterpret_cast<const __m128i*>(a.sums + (t0 + t) * a.sums_stride + i * 8));
    const __m128 m = _mm_cvtepi32_ps(_mm_madd_epi16(w.mins, sums));
    min_acc[t] = _mm_fmadd_ps(m, _mm_set1_ps(-w.dmin * da), min_acc[t]);
  }
}

// One row of Q4_K or Q5_K (the same layout plus a fifth bit per quant in qh).
template <class Block, int NT>
inline void k4_row(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
  const auto* b = reinterpret_cast<const Block*>(row);
  __m512 acc[NT];
  __m128 min_acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps(), min_acc[t] = _mm_setzero_ps();
  static const ScaleIndex index;
  DecodedK4 w;
  for (int64_t i = 0; i < n_cols / kQKK; ++i) {
    prefetch_ahead<(sizeof(Block) + 63) / 64>(b + i);
    w.d = f16_scale(b[i].d);
    w.dmin = f16_scale(b[i].dmin);
    decode_scales(b[i].scales, index, &w);
    decode_nibbles(b[i].qs, &w);
    if constexpr (std::is_same_v<Block, BlockQ5K>) add_high_bits(b[i].qh, &w);
    dot_k4<NT>(w, a, t0, i, acc, min_acc);
  }
  for (int t = 0; t < NT; ++t) out[t] = hsum512(acc[t]) + hsum128(min_acc[t]);
}

template <int NT>
struct Q4_KRow {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    k4_row<BlockQ4K, NT>(row, a, t0, n_cols, out);
  }
};

template <int NT>
struct Q5_KRow {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    k4_row<BlockQ5K, NT>(row, a, t0, n_cols, out);
  }
};

// Q6_K: one 128-element half = 64 ql bytes (low nibbles: elements 0-63, high: 64-127) and 32 qh
// bytes (bit pairs 0-1, 2-3, 4-5, 6-7 for elements l, l+32, l+64, l+96): both decoded vectors
// come out in element order, so activations need no reordering (ActLayout::Q8_K).
inline void decode_q6k_half(const uint8_t* ql, const uint8_t* qh_bytes, __m512i* lo, __m512i* hi) {
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
  const __m512i l = _mm512_loadu_si512(ql);
  const __m256i qh = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh_bytes));
  const __m512i qhv = join256(qh, qh);
  const __m512i shift_lo = join256(_mm256_set1_epi16(0), _mm256_set1_epi16(2));
  const __m512i shift_hi = join256(_mm256_set1_epi16(4), _mm256_set1_epi16(6));
  const __m512i h_lo = _mm512_and_si512(_mm512_srlv_epi16(qhv, shift_lo), m2);
  const __m512i h_hi = _mm512_and_si512(_mm512_srlv_epi16(qhv, shift_hi), m2);
  *lo = _mm512_or_si512(_mm512_and_si512(l, m4), _mm512_slli_epi16(h_lo, 4));
  *hi = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(l, 4), m4), _mm512_slli_epi16(h_hi, 4));
}

// int16 lane j of vector k covers elements 64k + 2j, +1: sub-block 4k + j / 8, i.e. 128-bit
// lane L holds sub-block 4k + L. Scales 0-7 (vectors 0, 1) and 8-15 (vectors 2, 3) are
// broadcast to every 128-bit lane and vpshufb picks each lane's.
struct Q6ScaleIndex {
  __m512i lanes[4];
  Q6ScaleIndex() {
    for (int k = 0; k < 4; ++k) {
      alignas(64) int8_t idx[64];
      for (int j = 0; j < 64; ++j) idx[j] = static_cast<int8_t>(2 * ((4 * k + j / 16) % 8) + j % 2);
      lanes[k] = _mm512_load_si512(idx);
    }
  }
};

template <int NT>
struct Q6_KRow {
  static void run(const uint8_t* row, const ActPack& a, int64_t t0, int64_t n_cols, float* out) {
    const auto* b = reinterpret_cast<const BlockQ6K*>(row);
    static const Q6ScaleIndex scale_index;
    __m512 acc[NT];
    for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
    for (int64_t i = 0; i < n_cols / kQKK; ++i) {
      prefetch_ahead<(sizeof(BlockQ6K) + 63) / 64>(b + i);
      __m512i q[4], scale[4];
      decode_q6k_half(b[i].ql, b[i].qh, &q[0], &q[1]);
      decode_q6k_half(b[i].ql + 64, b[i].qh + 32, &q[2], &q[3]);
      const __m256i sc16 =
          _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b[i].scales)));
      const __m512i lo = _mm512_broadcast_i32x4(_mm256_castsi256_si128(sc16));
      const __m512i hi = _mm512_broadcast_i32x4(_mm256_extracti128_si256(sc16, 1));
      for (int k = 0; k < 4; ++k)
        scale[k] = _mm512_shuffle_epi8(k < 2 ? lo : hi, scale_index.lanes[k]);
      const float d = f16_scale(b[i].d);
      for (int t = 0; t < NT; ++t) {
        const uint8_t* aq = a.q + (t0 + t) * a.q_stride + i * kQKK;
        __m512i isum = _mm512_setzero_si512();
        for (int k = 0; k < 4; ++k) {
          const __m512i p = _mm512_maddubs_epi16(q[k], _mm512_loadu_si512(aq + 64 * k));
          isum = _mm512_dpwssd_epi32(isum, p, scale[k]);
        }
        // Quants are stored +32: subtract 32 * sum over sub-blocks of scale * bsum.
        const __m256i bsums = _mm256_loadu_si256(
            reinterpret_cast<const __m256i*>(a.sums + (t0 + t) * a.sums_stride + i * 16));
        const __m256i corr = _mm256_slli_epi32(_mm256_madd_epi16(sc16, bsums), 5);
        isum = _mm512_sub_epi32(isum, _mm512_zextsi256_si512(corr));
        const float da = a.d[(t0 + t) * a.d_stride + i];
        acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(isum), _mm512_set1_ps(d * da), acc[t]);
      }
    }
    for (int t = 0; t < NT; ++t) out[t] = hsum512(acc[t]);
  }
};

// Q4_K strips gathered from 16 rows of the file layout (q4_k_strip.h has the format).
struct GatheredK4Rows {
  const uint8_t* base;
  __m512i offsets;
  __mmask16 valid;
  __m512i word(int64_t i, int64_t offset) const {
    const uint8_t* block = base + i * static_cast<int64_t>(sizeof(BlockQ4K));
    return _mm512_mask_i32gather_epi32(_mm512_setzero_si512(), valid, offsets, block + offset, 1);
  }
};

void pack_q4_k_strip(const MatrixRef& m, int64_t r0, __mmask16 valid, int64_t nb, uint8_t* buf) {
  const GatheredK4Rows rows{static_cast<const uint8_t*>(m.data) + r0 * m.row_stride,
                            strip_row_offsets(m.row_stride), valid};
  expand_q4_k_strip(rows, nb, buf);
}

struct Q4_KStrip {
  static constexpr int64_t kBlockElems = kQKK, kBytesPerBlock = kK4StripVectors * 64;
  static constexpr int kMaxTile = 4;
  static void pack(const MatrixRef& m, int64_t r0, __mmask16 valid, int64_t nb, uint8_t* buf) {
    pack_q4_k_strip(m, r0, valid, nb, buf);
  }
  template <int NT>
  static void tokens(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0, __mmask16 valid,
                     float* y, int64_t y_stride) {
    q4_k_strip_tokens<NT>(buf, nb, a, t0, valid, y, y_stride);
  }
};

// Q6_K with several tokens: the same scheme with 16-element sub-blocks in element order
// (ActLayout::Q8_K); quants are stored +32, undone with the sums of each sub-block's activations.
constexpr int64_t kQ6StripVectors = 64 + 16 + 8 + 1;  // quants, scales, scale pairs, d

void pack_q6_k_strip(const MatrixRef& m, int64_t r0, __mmask16 valid, int64_t nb, uint8_t* buf) {
  auto* out = reinterpret_cast<__m512i*>(buf);
  const __m512i offsets =
      _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                         _mm512_set1_epi32(static_cast<int32_t>(m.row_stride)));
  const auto* base = static_cast<const uint8_t*>(m.data) + r0 * m.row_stride;
  const __m512i zero = _mm512_setzero_si512();
  const __m512i m4 = _mm512_set1_epi8(0x0F), m2 = _mm512_set1_epi8(0x03);
  for (int64_t i = 0; i < nb; ++i) {
    const auto* blk = base + i * static_cast<int64_t>(sizeof(BlockQ6K));
    __m512i* o = out + i * kQ6StripVectors;
    for (int e = 0; e < kQKK; e += 4) {  // 4 elements per vector, in element order
      const int h = e / 128, l = e % 128;
      const uint8_t* ql = blk + offsetof(BlockQ6K, ql) + 64 * h + l % 64;
      const uint8_t* qh = blk + offsetof(BlockQ6K, qh) + 32 * h + l % 32;
      const __m512i lo = _mm512_mask_i32gather_epi32(zero, valid, offsets, ql, 1);
      const __m512i hi = _mm512_mask_i32gather_epi32(zero, valid, offsets, qh, 1);
      const __m512i low4 = _mm512_and_si512(l >= 64 ? _mm512_srli_epi16(lo, 4) : lo, m4);
      const __m512i high2 = _mm512_and_si512(_mm512_srli_epi16(hi, 2 * (l / 32)), m2);
      o[e / 4] = _mm512_or_si512(low4, _mm512_slli_epi16(high2, 4));
    }
    __m512i scale[16];
    const uint8_t* sc = blk + offsetof(BlockQ6K, scales);
    for (int k = 0; k < 4; ++k) {
      const __m512i v = _mm512_mask_i32gather_epi32(zero, valid, offsets, sc + 4 * k, 1);
      for (int j = 0; j < 4; ++j) {
        scale[4 * k + j] = _mm512_srai_epi32(_mm512_slli_epi32(v, 24 - 8 * j), 24);
      }
    }
    const __m512i low16 = _mm512_set1_epi32(0xFFFF);
    for (int s = 0; s < 16; ++s) o[64 + s] = scale[s];
    for (int p = 0; p < 8; ++p) {
      o[80 + p] = _mm512_or_si512(_mm512_and_si512(scale[2 * p], low16),
                                  _mm512_slli_epi32(scale[2 * p + 1], 16));
    }
    // d is the block's last 2 bytes: read the dword that ends there, so no read leaves the block.
    const __m512i dd =
        _mm512_mask_i32gather_epi32(zero, valid, offsets, blk + offsetof(BlockQ6K, d) - 2, 1);
    o[88] = _mm512_castps_si512(_mm512_cvtph_ps(_mm512_cvtepi32_epi16(_mm512_srli_epi32(dd, 16))));
  }
}

template <int NT>
void q6_k_strip_tokens(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0,
                       __mmask16 valid, float* y, int64_t y_stride) {
  const auto* strip = reinterpret_cast<const __m512i*>(buf);
  __m512 acc[NT];
  for (int t = 0; t < NT; ++t) acc[t] = _mm512_setzero_ps();
  for (int64_t i = 0; i < nb; ++i) {
    const __m512i* o = strip + i * kQ6StripVectors;
    __m512i scaled[NT], offset[NT];
    for (int t = 0; t < NT; ++t) scaled[t] = offset[t] = _mm512_setzero_si512();
    for (int sb = 0; sb < 16; ++sb) {
      __m512i sum[NT];
      for (int t = 0; t < NT; ++t) sum[t] = _mm512_setzero_si512();
      for (int g = 0; g < 4; ++g) {
        const __m512i w = _mm512_load_si512(o + 4 * sb + g);
        for (int t = 0; t < NT; ++t) {
          sum[t] = avx512::dpbusd_broadcast(
              sum[t], w, a.q + (t0 + t) * a.q_stride + i * kQKK + 16 * sb + 4 * g);
        }
      }
      const __m512i sc = _mm512_load_si512(o + 64 + sb);
      for (int t = 0; t < NT; ++t)
        scaled[t] = _mm512_add_epi32(scaled[t], _mm512_mullo_epi32(sum[t], sc));
    }
    for (int p = 0; p < 8; ++p) {
      const __m512i sp = _mm512_load_si512(o + 80 + p);
      for (int t = 0; t < NT; ++t) {
        int32_t pair;
        std::memcpy(&pair, a.sums + (t0 + t) * a.sums_stride + i * 16 + 2 * p, 4);
        offset[t] = _mm512_dpwssd_epi32(offset[t], sp, _mm512_set1_epi32(pair));
      }
    }
    const __m512 d = _mm512_castsi512_ps(_mm512_load_si512(o + 88));
    for (int t = 0; t < NT; ++t) {
      const __m512i total = _mm512_sub_epi32(scaled[t], _mm512_slli_epi32(offset[t], 5));
      const __m512 da = _mm512_set1_ps(a.d[(t0 + t) * a.d_stride + i]);
      acc[t] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total), _mm512_mul_ps(d, da), acc[t]);
    }
  }
  for (int t = 0; t < NT; ++t) _mm512_mask_storeu_ps(y + (t0 + t) * y_stride, valid, acc[t]);
}

struct Q6_KStrip {
  static constexpr int64_t kBlockElems = kQKK, kBytesPerBlock = kQ6StripVectors * 64;
  static constexpr int kMaxTile = 4;
  static void pack(const MatrixRef& m, int64_t r0, __mmask16 valid, int64_t nb, uint8_t* buf) {
    pack_q6_k_strip(m, r0, valid, nb, buf);
  }
  template <int NT>
  static void tokens(const uint8_t* buf, int64_t nb, const ActPack& a, int64_t t0, __mmask16 valid,
                     float* y, int64_t y_stride) {
    q6_k_strip_tokens<NT>(buf, nb, a, t0, valid, y, y_stride);
  }
};

const FastKernel kQ4_K{ActLayout::Q8_K_PERM, run_strips<Q4_KStrip, Q4_KRow>, "avx512-vnni q4_K"};
// Q5_K stays on the row kernel for every token count: with a transposed variant the strict
// Q4_K_M reference (f32 KV cache) kept 33 of 74 rows within 1e-4 instead of 68: its float
// summation order flips q8 rounding ties of the attention output it computes in those files.
const FastKernel kQ5_K{ActLayout::Q8_K_PERM, run_tiles<Q5_KRow>, "avx512-vnni q5_K"};
const FastKernel kQ6_K{ActLayout::Q8_K, run_strips<Q6_KStrip, Q6_KRow>, "avx512-vnni q6_K"};

}  // namespace

const FastKernel* avx512_k_kernel(GgmlType type) {
  switch (type) {
    case GgmlType::Q4_K:
      return &kQ4_K;
    case GgmlType::Q5_K:
      return &kQ5_K;
    case GgmlType::Q6_K:
      return &kQ6_K;
    default:
      return nullptr;
  }
}

}  // namespace tandem
