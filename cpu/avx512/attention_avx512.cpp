// AVX-512 attention loops: 16 floats per step, f16 caches widened with vcvtph2ps.
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <type_traits>
#include <utility>

#include "cpu/attention_kernels.h"
#include "cpu/avx512/simd512.h"
#include "cpu/half.h"

namespace tandem {
namespace {

using avx512::exp_nonpositive;
using avx512::hsum512;

// Horizontal max (GCC 12 warns falsely on _mm512_reduce_max_ps under -Werror).
inline float hmax512(__m512 v) {
  const __m256 lo = _mm512_castps512_ps256(v);
  const __m256 hi = _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1));
  __m128 m = _mm256_castps256_ps128(_mm256_max_ps(lo, hi));
  m = _mm_max_ps(m, _mm256_extractf128_ps(_mm256_max_ps(lo, hi), 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

inline __m512 load_row(const float* p) {
  return _mm512_loadu_ps(p);
}
inline __m512 load_row(const uint16_t* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}
inline __m512 load_tail(const float* p, __mmask16 m) {
  return _mm512_maskz_loadu_ps(m, p);
}
inline __m512 load_tail(const uint16_t* p, __mmask16 m) {
  return _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, p));
}

// Lane j of the result = the sum of v[j]'s lanes: four levels of pairwise adds across vectors.
inline __m512 transpose_sum16(const __m512 v[16]) {
  __m512 pairs[8], quads[4], octs[2];
  for (int j = 0; j < 8; ++j) {  // per 128-bit lane: v2j(0+2), v2j+1(0+2), v2j(1+3), v2j+1(1+3)
    pairs[j] = _mm512_add_ps(_mm512_unpacklo_ps(v[2 * j], v[2 * j + 1]),
                             _mm512_unpackhi_ps(v[2 * j], v[2 * j + 1]));
  }
  for (int j = 0; j < 4; ++j) {  // per 128-bit lane: the 128-bit lane's sums of v4j..v4j+3
    const __m512d a = _mm512_castps_pd(pairs[2 * j]), b = _mm512_castps_pd(pairs[2 * j + 1]);
    quads[j] = _mm512_add_ps(_mm512_castpd_ps(_mm512_unpacklo_pd(a, b)),
                             _mm512_castpd_ps(_mm512_unpackhi_pd(a, b)));
  }
  for (int j = 0; j < 2; ++j) {  // 128-bit lanes L0+L1, L2+L3 of quads 2j, then of quads 2j+1
    octs[j] = _mm512_add_ps(_mm512_shuffle_f32x4(quads[2 * j], quads[2 * j + 1], 0x88),
                            _mm512_shuffle_f32x4(quads[2 * j], quads[2 * j + 1], 0xDD));
  }
  return _mm512_add_ps(_mm512_shuffle_f32x4(octs[0], octs[1], 0x88),
                       _mm512_shuffle_f32x4(octs[0], octs[1], 0xDD));
}

// out[0, 16) = scaled dot products of q with 16 rows (dim a multiple of 16).
template <class K>
inline void scores16(const float* q, const K* rows, int64_t stride, int64_t dim, __m512 vscale,
                     float* out) {
  __m512 acc[16];
  for (int j = 0; j < 16; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < dim; i += 16) {
    const __m512 qi = _mm512_loadu_ps(q + i);
    for (int j = 0; j < 16; ++j)
      acc[j] = _mm512_fmadd_ps(qi, load_row(rows + j * stride + i), acc[j]);
  }
  _mm512_storeu_ps(out, _mm512_mul_ps(transpose_sum16(acc), vscale));
}

template <class K>
void scores(const float* q, const K* k, int64_t stride, int64_t n_pos, int64_t dim, float scale,
            float* out) {
  const int64_t full = dim & ~int64_t{15};
  const __mmask16 tail = static_cast<__mmask16>((1u << (dim - full)) - 1);
  int64_t p = 0;
  // 16 positions at a time: 16 independent FMA chains and one shared reduction, where one
  // position at a time waits on its chain and its own horizontal sum. (On the bench model's
  // decode, where attention is 2-4% of a step, the difference stayed within this VM's noise.)
  if (!tail) {
    const __m512 vscale = _mm512_set1_ps(scale);
    for (; p + 16 <= n_pos; p += 16) scores16(q, k + p * stride, stride, dim, vscale, out + p);
  }
  for (; p < n_pos; ++p) {
    const K* row = k + p * stride;
    __m512 acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < full; i += 16)
      acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), load_row(row + i), acc);
    if (tail)
      acc =
          _mm512_fmadd_ps(_mm512_maskz_loadu_ps(tail, q + full), load_tail(row + full, tail), acc);
    out[p] = hsum512(acc) * scale;
  }
}

// out[0, 16 * NV) = the weighted sum of the rows' first NV vectors, in NV registers. A whole
// 128-dim head row in one pass asks for all of its lines together (the rows were written a step
// or more ago and usually come from DRAM): decode attention 2.5-4% faster than two 64-dim
// passes (Q4_K bench, tg256, steps alternating in one process). Each output still sums the
// positions in order, so results do not change.
template <int NV, class V>
inline void weighted_sum_span(const float* w, const V* v, int64_t stride, int64_t n_pos,
                              float* out) {
  __m512 acc[NV];
  for (int j = 0; j < NV; ++j) acc[j] = _mm512_setzero_ps();
  for (int64_t p = 0; p < n_pos; ++p) {
    const __m512 wp = _mm512_set1_ps(w[p]);
    const V* row = v + p * stride;
    for (int j = 0; j < NV; ++j) acc[j] = _mm512_fmadd_ps(wp, load_row(row + 16 * j), acc[j]);
  }
  for (int j = 0; j < NV; ++j) _mm512_storeu_ps(out + 16 * j, acc[j]);
}

template <class V>
void weighted_sum(const float* w, const V* v, int64_t stride, int64_t n_pos, int64_t dim,
                  float* out) {
  int64_t i = 0;
  for (; i + 128 <= dim; i += 128) weighted_sum_span<8>(w, v + i, stride, n_pos, out + i);
  for (; i + 64 <= dim; i += 64) weighted_sum_span<4>(w, v + i, stride, n_pos, out + i);
  for (; i < dim; i += 16) {
    const __mmask16 m = static_cast<__mmask16>(dim - i >= 16 ? 0xFFFF : (1u << (dim - i)) - 1);
    __m512 a = _mm512_setzero_ps();
    for (int64_t p = 0; p < n_pos; ++p)
      a = _mm512_fmadd_ps(_mm512_set1_ps(w[p]), load_tail(v + p * stride + i, m), a);
    _mm512_mask_storeu_ps(out + i, m, a);
  }
}

void softmax(float* x, int64_t n) {
  __m512 vmax = _mm512_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) vmax = _mm512_max_ps(vmax, _mm512_loadu_ps(x + i));
  float max = hmax512(vmax);
  for (int64_t j = i; j < n; ++j) max = x[j] > max ? x[j] : max;
  const __m512 vm = _mm512_set1_ps(max);
  __m512 vsum = _mm512_setzero_ps();
  for (i = 0; i + 16 <= n; i += 16) {
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_loadu_ps(x + i), vm));
    _mm512_storeu_ps(x + i, e);
    vsum = _mm512_add_ps(vsum, e);
  }
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
    const __m512 e = exp_nonpositive(_mm512_sub_ps(_mm512_maskz_loadu_ps(m, x + i), vm));
    _mm512_mask_storeu_ps(x + i, m, e);
    vsum = _mm512_add_ps(vsum, _mm512_maskz_mov_ps(m, e));
  }
  const __m512 inv = _mm512_set1_ps(1.0f / hsum512(vsum));
  for (i = 0; i + 16 <= n; i += 16)
    _mm512_storeu_ps(x + i, _mm512_mul_ps(_mm512_loadu_ps(x + i), inv));
  for (; i < n; ++i) x[i] *= _mm512_cvtss_f32(inv);
}

// Grouped-query attention: n_rep query heads share each cached row. Per head, the three
// kernels above would read the whole K and V of the kv head n_rep times (a 4096-token f16
// context: 1 MB each per kv head, beyond L2, so from L3 or DRAM n_rep times over); here each
// 16-row K block is read (and widened) once for all heads, and V once per slice of dims.
// Every output is computed with the same operations in the same order as per head, so the
// results are equal bit for bit.
constexpr int64_t kGroupedMaxDim = 256;
// V rows per pass over the dim slices: their slices stay in L2 between passes (256 rows of a
// 128-dim f16 head: 64 KB).
constexpr int64_t kValueRowBlock = 256;
constexpr int kMaxHeadsPerPass = 8;  // 2 accumulators each, and the two value vectors

// The value passes run over dim slices, so the first pass meets each row 128 or 256 bytes after
// the last: it asks for whole rows kValueRowsAhead on, which the later passes then find in L2.
// One thread, 8 heads of 128 over 4096 cached f16 rows (head-major, cold): values 300 -> 240
// us, with keys at 235 us against 210 from cache. Asking for key rows ahead made keys slower
// (235 -> 290 us): they are read front to back, and the hardware prefetcher keeps up there.
template <class T>
inline void prefetch_row(const T* row, int64_t dim) {
  const char* bytes = reinterpret_cast<const char*>(row);
  for (int64_t b = 0; b < dim * static_cast<int64_t>(sizeof(T)); b += 64)
    __builtin_prefetch(bytes + b, 0, 3);
}
constexpr int64_t kValueRowsAhead = 32;

template <class K>
void grouped_scores(const float* q, int64_t n_rep, const K* k, int64_t stride, int64_t n_pos,
                    int64_t dim, float scale, float* out) {
  alignas(64) float widened[16 * kGroupedMaxDim];
  const __m512 vscale = _mm512_set1_ps(scale);
  int64_t p = 0;
  for (; p + 16 <= n_pos; p += 16) {
    const float* rows;
    int64_t row_stride;
    if constexpr (std::is_same_v<K, float>) {
      rows = k + p * stride;
      row_stride = stride;
    } else {
      for (int j = 0; j < 16; ++j)
        for (int64_t i = 0; i < dim; i += 16)
          _mm512_store_ps(widened + j * dim + i, load_row(k + (p + j) * stride + i));
      rows = widened;
      row_stride = dim;
    }
    for (int64_t r = 0; r < n_rep; ++r)
      scores16(q + r * dim, rows, row_stride, dim, vscale, out + r * n_pos + p);
  }
  if (p == n_pos) return;
  for (int64_t r = 0; r < n_rep; ++r)  // the last n_pos % 16 rows, as scores() takes them
    scores(q + r * dim, k + p * stride, stride, n_pos - p, dim, scale, out + r * n_pos + p);
}

// out[r * dim + i] = sum over p of w[r * n_pos + p] * v[p * stride + i], for NR heads: NV
// vectors of dims at a time, positions in order as weighted_sum_span sums them.
template <int NR, int NV, class V>
void weighted_sum_slices(const float* w, const V* v, int64_t stride, int64_t n_pos, int64_t dim,
                         float* out) {
  for (int64_t p0 = 0; p0 < n_pos; p0 += kValueRowBlock) {
    const int64_t p1 = std::min(n_pos, p0 + kValueRowBlock);
    for (int64_t i = 0; i < dim; i += 16 * NV) {
      __m512 acc[NR][NV];
      for (int r = 0; r < NR; ++r)
        for (int j = 0; j < NV; ++j)
          acc[r][j] = p0 == 0 ? _mm512_setzero_ps() : _mm512_loadu_ps(out + r * dim + i + 16 * j);
      for (int64_t p = p0; p < p1; ++p) {
        if (i == 0 && p + kValueRowsAhead < n_pos)
          prefetch_row(v + (p + kValueRowsAhead) * stride, dim);
        __m512 row[NV];
        for (int j = 0; j < NV; ++j) row[j] = load_row(v + p * stride + i + 16 * j);
        for (int r = 0; r < NR; ++r) {
          const __m512 wp = _mm512_set1_ps(w[r * n_pos + p]);
          for (int j = 0; j < NV; ++j) acc[r][j] = _mm512_fmadd_ps(wp, row[j], acc[r][j]);
        }
      }
      for (int r = 0; r < NR; ++r)
        for (int j = 0; j < NV; ++j) _mm512_storeu_ps(out + r * dim + i + 16 * j, acc[r][j]);
    }
  }
}

template <int NR, class V>
void grouped_weighted_sum(const float* w, const V* v, int64_t stride, int64_t n_pos, int64_t dim,
                          float* out) {
  if (dim % 32 == 0) return weighted_sum_slices<NR, 2>(w, v, stride, n_pos, dim, out);
  weighted_sum_slices<NR, 1>(w, v, stride, n_pos, dim, out);
}

// grouped_weighted_sum for 1 .. kMaxHeadsPerPass heads, by head count - 1.
template <class V, size_t... N>
constexpr auto grouped_weighted_sum_table(std::index_sequence<N...>) {
  return std::array{&grouped_weighted_sum<static_cast<int>(N) + 1, V>...};
}
template <class V>
constexpr auto kGroupedWeightedSums =
    grouped_weighted_sum_table<V>(std::make_index_sequence<kMaxHeadsPerPass>());

template <class KV>
void attend_heads(const float* q, int64_t n_rep, const KV* k, const KV* v, int64_t stride,
                  int64_t n_pos, int64_t dim, float scale, float* scores_out, float* out) {
  if (dim % 16 != 0 || dim > kGroupedMaxDim) {  // rare head sizes: head by head
    for (int64_t r = 0; r < n_rep; ++r) {
      float* s = scores_out + r * n_pos;
      scores(q + r * dim, k, stride, n_pos, dim, scale, s);
      softmax(s, n_pos);
      weighted_sum(s, v, stride, n_pos, dim, out + r * dim);
    }
    return;
  }
  grouped_scores(q, n_rep, k, stride, n_pos, dim, scale, scores_out);
  for (int64_t r = 0; r < n_rep; ++r) softmax(scores_out + r * n_pos, n_pos);
  for (int64_t r0 = 0; r0 < n_rep; r0 += kMaxHeadsPerPass) {
    const int64_t heads = std::min<int64_t>(kMaxHeadsPerPass, n_rep - r0);
    kGroupedWeightedSums<KV>[heads - 1](scores_out + r0 * n_pos, v, stride, n_pos, dim,
                                        out + r0 * dim);
  }
}

const AttentionKernels kAvx512 = {scores<float>,          scores<uint16_t>, weighted_sum<float>,
                                  weighted_sum<uint16_t>, softmax,          attend_heads<float>,
                                  attend_heads<uint16_t>};

}  // namespace

const AttentionKernels& attention_kernels_avx512() {
  return kAvx512;
}

}  // namespace tandem
