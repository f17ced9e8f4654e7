// Rebuilding the file's rows from one 16-row group of an interleaved layout (cpu/interleave.h)
// with in-register 4 x 16 transposes: uploads of interleaved experts to an accelerator do this
// while staging, so it must run faster than the link (the scalar word-by-word copy reached
// 14-16 GB/s here, under a PCIe 4.0 x16 link's ~25).
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tandem {
namespace {

constexpr int64_t kRows = 16;

// v[j] holds word k0 + j of the 16 rows (dword lane r = row r). Returns u with u[m]'s 128-bit
// lane l holding the 4 words (16 bytes) of row 4l + m.
inline void transpose_quad(const __m512i v[4], __m512i u[4]) {
  const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
  u[0] = _mm512_unpacklo_epi64(t0, t2);
  u[1] = _mm512_unpackhi_epi64(t0, t2);
  u[2] = _mm512_unpacklo_epi64(t1, t3);
  u[3] = _mm512_unpackhi_epi64(t1, t3);
}

// Writes each row's 4 words of v (see transpose_quad) to rows + r * row_size + offset.
inline void store_quad(const __m512i v[4], uint8_t* rows, int64_t row_size, int64_t offset) {
  __m512i u[4];
  transpose_quad(v, u);
  for (int m = 0; m < 4; ++m) {
    uint8_t* row = rows + m * row_size + offset;
    const int64_t four_rows = 4 * row_size;
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row), _mm512_castsi512_si128(u[m]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + four_rows),
                     _mm512_extracti32x4_epi32(u[m], 1));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 2 * four_rows),
                     _mm512_extracti32x4_epi32(u[m], 2));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(row + 3 * four_rows),
                     _mm512_extracti32x4_epi32(u[m], 3));
  }
}

// a and b: words k0..k0+3 and k0+4..k0+7 of the 16 rows. Writes each row's 8 words (32 bytes)
// with one store instead of two. Q8_0 uses it (one thread, 3 alternating rounds on a quiet
// machine: 25.7-26.1 -> 28.5-29.0 GB/s); for Q4_K it was no faster than 16-byte stores.
inline void store_octet(const __m512i a[4], const __m512i b[4], uint8_t* rows, int64_t row_size,
                        int64_t offset) {
  __m512i ua[4], ub[4];
  transpose_quad(a, ua);
  transpose_quad(b, ub);
  const int64_t four_rows = 4 * row_size;
  for (int m = 0; m < 4; ++m) {
    // [a0 a1 b0 b1] then [a0 b0 a1 b1]: rows m and 4 + m whole; likewise rows 8 + m and 12 + m.
    __m512i lo = _mm512_shuffle_i64x2(ua[m], ub[m], _MM_SHUFFLE(1, 0, 1, 0));
    __m512i hi = _mm512_shuffle_i64x2(ua[m], ub[m], _MM_SHUFFLE(3, 2, 3, 2));
    lo = _mm512_shuffle_i64x2(lo, lo, _MM_SHUFFLE(3, 1, 2, 0));
    hi = _mm512_shuffle_i64x2(hi, hi, _MM_SHUFFLE(3, 1, 2, 0));
    uint8_t* row = rows + m * row_size + offset;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row), _mm512_castsi512_si256(lo));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + four_rows),
                        _mm512_extracti64x4_epi64(lo, 1));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 2 * four_rows),
                        _mm512_castsi512_si256(hi));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 3 * four_rows),
                        _mm512_extracti64x4_epi64(hi, 1));
  }
}

inline void load_quad(const uint8_t* first, __m512i v[4]) {
  for (int j = 0; j < 4; ++j) v[j] = _mm512_loadu_si512(first + 64 * j);
}

}  // namespace

// Q4_K_X16: block i's 36 words of 16 rows at (i * 36 + k) * 16 + r.
void deinterleave_group_q4_k_avx512(const uint8_t* group, uint8_t* rows, int64_t row_size) {
  constexpr int64_t kBlockBytes = 144, kWords = kBlockBytes / 4;
  const int64_t n_blocks = row_size / kBlockBytes;
  __m512i v[4];
  for (int64_t i = 0; i < n_blocks; ++i) {
    const uint8_t* src = group + i * kBlockBytes * kRows;
    for (int64_t k = 0; k < kWords; k += 4) {
      load_quad(src + k * 64, v);
      store_quad(v, rows, row_size, i * kBlockBytes + 4 * k);
    }
  }
}

// Q8_0_X16: pair p at p * 1088: quants of block 2p (word k of row r at k * 16 + r), of block
// 2p + 1, then the 16 f16 scales of each block. A row's block: f16 scale, then 32 quants.
void deinterleave_group_q8_0_avx512(const uint8_t* group, uint8_t* rows, int64_t row_size) {
  constexpr int64_t kBlockBytes = 34, kQuantBytes = kRows * 32, kPairBytes = 2 * kRows * 34;
  const int64_t n_blocks = row_size / kBlockBytes;
  __m512i words_0_3[4], words_4_7[4];
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* pair = group + (b / 2) * kPairBytes;
    const uint8_t* quants = pair + (b % 2) * kQuantBytes;
    const uint8_t* scales = pair + 2 * kQuantBytes + (b % 2) * kRows * 2;
    load_quad(quants, words_0_3);
    load_quad(quants + 4 * 64, words_4_7);
    store_octet(words_0_3, words_4_7, rows, row_size, b * kBlockBytes + 2);
    for (int64_t r = 0; r < kRows; ++r)
      std::memcpy(rows + r * row_size + b * kBlockBytes, scales + 2 * r, 2);
  }
}

}  // namespace tandem
