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

// v[j] holds word k0 + j of the 16 rows (dword lane r = row r). Writes each row's 4 words (16
// bytes) to rows + r * row_size + offset.
inline void store_quad(const __m512i v[4], uint8_t* rows, int64_t row_size, int64_t offset) {
  const __m512i t0 = _mm512_unpacklo_epi32(v[0], v[1]), t1 = _mm512_unpackhi_epi32(v[0], v[1]);
  const __m512i t2 = _mm512_unpacklo_epi32(v[2], v[3]), t3 = _mm512_unpackhi_epi32(v[2], v[3]);
  // u[m], 128-bit lane l: the 4 words of row 4l + m.
  const __m512i u[4] = {_mm512_unpacklo_epi64(t0, t2), _mm512_unpackhi_epi64(t0, t2),
                        _mm512_unpacklo_epi64(t1, t3), _mm512_unpackhi_epi64(t1, t3)};
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
  __m512i v[4];
  for (int64_t b = 0; b < n_blocks; ++b) {
    const uint8_t* pair = group + (b / 2) * kPairBytes;
    const uint8_t* quants = pair + (b % 2) * kQuantBytes;
    const uint8_t* scales = pair + 2 * kQuantBytes + (b % 2) * kRows * 2;
    load_quad(quants, v);
    store_quad(v, rows, row_size, b * kBlockBytes + 2);
    load_quad(quants + 4 * 64, v);
    store_quad(v, rows, row_size, b * kBlockBytes + 18);
    for (int64_t r = 0; r < kRows; ++r)
      std::memcpy(rows + r * row_size + b * kBlockBytes, scales + 2 * r, 2);
  }
}

}  // namespace tandem
