// Streaming read of a buffer with 512-bit loads, for the bandwidth measurement.
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace tandem {

uint64_t sum_words_avx512(const uint64_t* data, int64_t n) {
  __m512i a = _mm512_setzero_si512(), b = a, c = a, d = a;
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a = _mm512_add_epi64(a, _mm512_loadu_si512(data + i));
    b = _mm512_add_epi64(b, _mm512_loadu_si512(data + i + 8));
    c = _mm512_add_epi64(c, _mm512_loadu_si512(data + i + 16));
    d = _mm512_add_epi64(d, _mm512_loadu_si512(data + i + 24));
  }
  // A plain store + loop instead of _mm512_reduce_add_epi64, whose GCC 12 header trips
  // -Werror=uninitialized.
  alignas(64) uint64_t lanes[8];
  _mm512_store_si512(lanes, _mm512_add_epi64(_mm512_add_epi64(a, b), _mm512_add_epi64(c, d)));
  uint64_t s = 0;
  for (uint64_t lane : lanes) s += lane;
  for (; i < n; ++i) {  // memcpy: callers may pass words that are not 8-byte aligned
    uint64_t word;
    std::memcpy(&word, data + i, sizeof(word));
    s += word;
  }
  return s;
}

}  // namespace tandem
