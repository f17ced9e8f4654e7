// Per-element and per-block math of the CUDA kernels as host/device inline functions, so host
// tests (tests/gpu_kernel_math_test.cpp) check exactly what the device computes against the CPU
// reference (cpu/quant.h, cpu/ops.h). The expressions keep the CPU reference's order of
// operations; the CUDA target compiles with -fmad=false so no multiply-add is contracted and a
// block's result is bit-identical on host and device (only sums across blocks or lanes differ).
//
// Each weight type is a traits struct (TypeQ4_0 ...) with the same members, and the one type
// table (TANDEM_KMATH_*_TYPES) lists them for dispatch and explicit instantiation.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu/half.h"
#include "cpu/quant_blocks.h"
#include "cpu/quant_types.h"

namespace tandem::kmath {

// ---- scalar helpers ----

// Round half to even (what the CPU's nearbyint does in the default FP environment).
TANDEM_HD inline float round_even(float v) {
#if defined(__CUDA_ARCH__)
  return rintf(v);
#else
  return std::nearbyint(v);
#endif
}

TANDEM_HD inline float exp_f(float v) {
#if defined(__CUDA_ARCH__)
  return expf(v);
#else
  return std::exp(v);
#endif
}

// Round to nearest (ties to even) for |f| < 2^22, the magic-number trick of ggml's quantizers.
TANDEM_HD inline int nearest_int_hd(float f) {
  const float v = f + 12582912.f;
  return static_cast<int>(float_bits(v) & 0x007fffffu) - 0x00400000;
}

// 2^(e-127) / 2: the MXFP4 block scale paired with mxfp4_value (values doubled).
TANDEM_HD inline float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
  return bits_float(bits);
}

// e2m1 value of a nibble times two: 0 1 2 3 4 6 8 12, negated when bit 3 is set.
TANDEM_HD inline int mxfp4_value(int nibble) {
  const int m = nibble & 7;
  const int mag = m < 4 ? m : (m < 6 ? 4 + (m - 4) * 2 : 8 + (m - 6) * 4);
  return (nibble & 8) ? -mag : mag;
}

// The 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block.
TANDEM_HD inline void k4_scale_min_hd(int j, const uint8_t* q, int* sc, int* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4);
    *m = (q[j + 4] >> 4) | ((q[j] >> 6) << 4);
  }
}

// Nibble j (0..31) of a 32-element block: low nibbles hold 0..15, high nibbles 16..31.
TANDEM_HD inline int nibble32(const uint8_t* qs, int j) {
  return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}

// Five-bit value of element j of a Q5_0/Q5_1 block (qh read byte-wise: blocks are unaligned).
TANDEM_HD inline int q5_value_hd(const uint8_t* qh, const uint8_t* qs, int j) {
  return nibble32(qs, j) | (((qh[j >> 3] >> (j & 7)) & 1) << 4);
}

// Six-bit value (-32..31) of element idx (0..255) of a Q6_K block.
TANDEM_HD inline int q6k_value(const BlockQ6K& b, int idx) {
  const int half = idx >> 7, quarter = (idx >> 5) & 3, l = idx & 31;
  const uint8_t low = b.ql[64 * half + l + 32 * (quarter & 1)];
  const int nib = quarter >= 2 ? (low >> 4) : (low & 0xF);
  const int high = (b.qh[32 * half + l] >> (2 * quarter)) & 3;
  return (nib | (high << 4)) - 32;
}

// Four-bit (Q4_K) or five-bit (Q5_K) level of element idx (0..255).
TANDEM_HD inline int q4k_level(const uint8_t* qs, int idx) {
  const int j = idx >> 5, l = idx & 31;
  const uint8_t byte = qs[32 * (j >> 1) + l];
  return (j & 1) ? (byte >> 4) : (byte & 0xF);
}
TANDEM_HD inline int q5k_level(const BlockQ5K& b, int idx) {
  const int j = idx >> 5, l = idx & 31;
  return q4k_level(b.qs, idx) | (((b.qh[l] >> j) & 1) << 4);
}

// ---- weight types: element values, and dot products with quantized activations ----
// Quantized types split a block into units of 32 elements (8 per K-quant super-block). A unit
// yields an integer partial; partials of one block are summed as integers, then `combine` turns
// the block's sums into its float contribution exactly as vec_dot_ref does.

struct TypeF32 {
  using Block = float;
  static constexpr GgmlType kType = GgmlType::F32;
  static constexpr int kElems = 1;
  TANDEM_HD static float value(const Block& b, int) { return b; }
  TANDEM_HD static float round_act(float x) { return x; }
};
struct TypeF16 {
  using Block = uint16_t;
  static constexpr GgmlType kType = GgmlType::F16;
  static constexpr int kElems = 1;
  TANDEM_HD static float value(const Block& b, int) { return fp16_to_fp32(b); }
  TANDEM_HD static float round_act(float x) { return round_fp16(x); }
};
struct TypeBF16 {
  using Block = uint16_t;
  static constexpr GgmlType kType = GgmlType::BF16;
  static constexpr int kElems = 1;
  TANDEM_HD static float value(const Block& b, int) { return bf16_to_fp32(b); }
  TANDEM_HD static float round_act(float x) { return round_bf16(x); }
};

// Integer dot of 32 weight levels with 32 int8 activations.
template <class Level>
TANDEM_HD inline int dot32(const int8_t* a, Level level) {
  int s = 0;
  for (int l = 0; l < 32; ++l) s += level(l) * a[l];
  return s;
}

struct TypeQ4_0 {
  using Block = BlockQ4_0;
  using Act = BlockQ8_0;
  static constexpr GgmlType kType = GgmlType::Q4_0;
  static constexpr int kElems = 32, kUnits = 1;
  TANDEM_HD static float value(const Block& b, int j) {
    return static_cast<float>(nibble32(b.qs, j) - 8) * fp16_to_fp32(b.d);
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int, int* sum_m) {
    *sum_m = 0;
    return dot32(a.qs, [&](int l) { return nibble32(b.qs, l) - 8; });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return static_cast<float>(sum_q) * (fp16_to_fp32(b.d) * fp16_to_fp32(a.d));
  }
};

struct TypeQ4_1 {
  using Block = BlockQ4_1;
  using Act = BlockQ8_1;
  static constexpr GgmlType kType = GgmlType::Q4_1;
  static constexpr int kElems = 32, kUnits = 1;
  TANDEM_HD static float value(const Block& b, int j) {
    return static_cast<float>(nibble32(b.qs, j)) * fp16_to_fp32(b.d) + fp16_to_fp32(b.m);
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int, int* sum_m) {
    *sum_m = 0;
    return dot32(a.qs, [&](int l) { return nibble32(b.qs, l); });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return (fp16_to_fp32(b.d) * fp16_to_fp32(a.d)) * static_cast<float>(sum_q) +
           fp16_to_fp32(b.m) * fp16_to_fp32(a.s);
  }
};

struct TypeQ5_0 {
  using Block = BlockQ5_0;
  using Act = BlockQ8_0;
  static constexpr GgmlType kType = GgmlType::Q5_0;
  static constexpr int kElems = 32, kUnits = 1;
  TANDEM_HD static float value(const Block& b, int j) {
    return static_cast<float>(q5_value_hd(b.qh, b.qs, j) - 16) * fp16_to_fp32(b.d);
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int, int* sum_m) {
    *sum_m = 0;
    return dot32(a.qs, [&](int l) { return q5_value_hd(b.qh, b.qs, l) - 16; });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return static_cast<float>(sum_q) * (fp16_to_fp32(b.d) * fp16_to_fp32(a.d));
  }
};

struct TypeQ5_1 {
  using Block = BlockQ5_1;
  using Act = BlockQ8_1;
  static constexpr GgmlType kType = GgmlType::Q5_1;
  static constexpr int kElems = 32, kUnits = 1;
  TANDEM_HD static float value(const Block& b, int j) {
    return static_cast<float>(q5_value_hd(b.qh, b.qs, j)) * fp16_to_fp32(b.d) + fp16_to_fp32(b.m);
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int, int* sum_m) {
    *sum_m = 0;
    return dot32(a.qs, [&](int l) { return q5_value_hd(b.qh, b.qs, l); });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return (fp16_to_fp32(b.d) * fp16_to_fp32(a.d)) * static_cast<float>(sum_q) +
           fp16_to_fp32(b.m) * fp16_to_fp32(a.s);
  }
};

struct TypeQ8_0 {
  using Block = BlockQ8_0;
  using Act = BlockQ8_0;
  static constexpr GgmlType kType = GgmlType::Q8_0;
  static constexpr int kElems = 32, kUnits = 1;
  TANDEM_HD static float value(const Block& b, int j) {
    return static_cast<float>(b.qs[j]) * fp16_to_fp32(b.d);
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int, int* sum_m) {
    *sum_m = 0;
    return dot32(a.qs, [&](int l) { return static_cast<int>(b.qs[l]); });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return static_cast<float>(sum_q) * (fp16_to_fp32(b.d) * fp16_to_fp32(a.d));
  }
};

struct TypeMxfp4 {
  using Block = BlockMxfp4;
  using Act = BlockQ8_0;
  static constexpr GgmlType kType = GgmlType::MXFP4;
  static constexpr int kElems = 32, kUnits = 1;
  TANDEM_HD static float value(const Block& b, int j) {
    return static_cast<float>(mxfp4_value(nibble32(b.qs, j))) * e8m0_half(b.e);
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int, int* sum_m) {
    *sum_m = 0;
    return dot32(a.qs, [&](int l) { return mxfp4_value(nibble32(b.qs, l)); });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return e8m0_half(b.e) * fp16_to_fp32(a.d) * static_cast<float>(sum_q);
  }
};

// Q4_K and Q5_K share the affine form x = d*sc*q - dmin*m per sub-block of 32.
template <class Derived, class BlockT>
struct AffineK {
  using Block = BlockT;
  using Act = BlockQ8K;
  static constexpr int kElems = 256, kUnits = 8;
  TANDEM_HD static float value(const Block& b, int idx) {
    int sc, m;
    k4_scale_min_hd(idx >> 5, b.scales, &sc, &m);
    const float d1 = fp16_to_fp32(b.d) * static_cast<float>(sc);
    const float m1 = fp16_to_fp32(b.dmin) * static_cast<float>(m);
    return d1 * static_cast<float>(Derived::level(b, idx)) - m1;
  }
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int j, int* sum_m) {
    int sc, m;
    k4_scale_min_hd(j, b.scales, &sc, &m);
    *sum_m = m * (a.bsums[2 * j] + a.bsums[2 * j + 1]);
    return sc * dot32(a.qs + 32 * j, [&](int l) { return Derived::level(b, 32 * j + l); });
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int sum_m) {
    return fp16_to_fp32(b.d) * a.d * static_cast<float>(sum_q) -
           fp16_to_fp32(b.dmin) * a.d * static_cast<float>(sum_m);
  }
};
struct TypeQ4K : AffineK<TypeQ4K, BlockQ4K> {
  static constexpr GgmlType kType = GgmlType::Q4_K;
  TANDEM_HD static int level(const BlockQ4K& b, int idx) { return q4k_level(b.qs, idx); }
};
struct TypeQ5K : AffineK<TypeQ5K, BlockQ5K> {
  static constexpr GgmlType kType = GgmlType::Q5_K;
  TANDEM_HD static int level(const BlockQ5K& b, int idx) { return q5k_level(b, idx); }
};

struct TypeQ6K {
  using Block = BlockQ6K;
  using Act = BlockQ8K;
  static constexpr GgmlType kType = GgmlType::Q6_K;
  static constexpr int kElems = 256, kUnits = 8;
  TANDEM_HD static float value(const Block& b, int idx) {
    return fp16_to_fp32(b.d) * static_cast<float>(b.scales[idx >> 4]) *
           static_cast<float>(q6k_value(b, idx));
  }
  // Unit j covers the 16-element sub-blocks 2j and 2j+1.
  TANDEM_HD static int dot_unit(const Block& b, const Act& a, int j, int* sum_m) {
    *sum_m = 0;
    int s0 = 0, s1 = 0;
    for (int l = 0; l < 16; ++l) {
      s0 += q6k_value(b, 32 * j + l) * a.qs[32 * j + l];
      s1 += q6k_value(b, 32 * j + 16 + l) * a.qs[32 * j + 16 + l];
    }
    return b.scales[2 * j] * s0 + b.scales[2 * j + 1] * s1;
  }
  TANDEM_HD static float combine(const Block& b, const Act& a, int sum_q, int) {
    return fp16_to_fp32(b.d) * a.d * static_cast<float>(sum_q);
  }
};

// The one type table: X(ggml type name, traits struct).
// clang-format off
#define TANDEM_KMATH_FLOAT_TYPES(X) X(F32, TypeF32) X(F16, TypeF16) X(BF16, TypeBF16)
#define TANDEM_KMATH_QUANT_TYPES(X)                                                  \
  X(Q4_0, TypeQ4_0) X(Q4_1, TypeQ4_1) X(Q5_0, TypeQ5_0) X(Q5_1, TypeQ5_1)            \
  X(Q8_0, TypeQ8_0) X(Q4_K, TypeQ4K) X(Q5_K, TypeQ5K) X(Q6_K, TypeQ6K)               \
  X(MXFP4, TypeMxfp4)
// clang-format on

template <class T>
TANDEM_HD inline void dequantize_block(const typename T::Block& b, float* y) {
  for (int j = 0; j < T::kElems; ++j) y[j] = T::value(b, j);
}

// Whole-block dot with the integer partials summed in unit order (what one lane group does).
template <class T>
TANDEM_HD inline float dot_block(const typename T::Block& b, const typename T::Act& a) {
  int sum_q = 0, sum_m = 0;
  for (int u = 0; u < T::kUnits; ++u) {
    int m;
    sum_q += T::dot_unit(b, a, u, &m);
    sum_m += m;
  }
  return T::combine(b, a, sum_q, sum_m);
}

// ---- activation quantization (cpu/quant.cpp's rules, one block at a time) ----

// Scale of a q8_0/q8_1 block from its largest magnitude: *d16 = f16 scale, *inv = multiplier.
// Returns the f32 scale (q8_1's sum term uses it before f16 rounding).
TANDEM_HD inline float q8_scale(float amax, uint16_t* d16, float* inv) {
  const float d = amax / 127.f;
  *d16 = fp32_to_fp16(d);
  *inv = amax != 0 ? 127.f / amax : 0.0f;
  return d;
}
TANDEM_HD inline int8_t q8_quant(float x, float inv) {
  return static_cast<int8_t>(round_even(x * inv));
}

TANDEM_HD inline void quantize_block_q8_0(const float* x, BlockQ8_0* y) {
  float amax = 0;
  for (int j = 0; j < kQK; ++j) amax = fmaxf(amax, fabsf(x[j]));
  float inv;
  q8_scale(amax, &y->d, &inv);
  for (int j = 0; j < kQK; ++j) y->qs[j] = q8_quant(x[j], inv);
}

TANDEM_HD inline void quantize_block_q8_1(const float* x, BlockQ8_1* y) {
  float amax = 0;
  for (int j = 0; j < kQK; ++j) amax = fmaxf(amax, fabsf(x[j]));
  float inv;
  const float d = q8_scale(amax, &y->d, &inv);
  int sum = 0;
  for (int j = 0; j < kQK; ++j) {
    y->qs[j] = q8_quant(x[j], inv);
    sum += y->qs[j];
  }
  y->s = fp32_to_fp16(d * static_cast<float>(sum));
}

// q8_K: vmax is the first element of largest magnitude, with its sign (0: all zero).
TANDEM_HD inline float q8k_iscale(float vmax) {
  return vmax != 0 ? -127.f / vmax : 0.0f;
}
TANDEM_HD inline int8_t q8k_quant(float x, float iscale) {
  const int q = nearest_int_hd(iscale * x);
  return static_cast<int8_t>(q < 127 ? q : 127);
}
TANDEM_HD inline float q8k_scale(float iscale) {
  return iscale != 0 ? 1 / iscale : 0.0f;
}

TANDEM_HD inline void quantize_block_q8_k(const float* x, BlockQ8K* y) {
  float amax = 0, vmax = 0;
  for (int l = 0; l < kQKK; ++l) {
    if (fabsf(x[l]) > amax) {
      amax = fabsf(x[l]);
      vmax = x[l];
    }
  }
  const float iscale = q8k_iscale(vmax);
  for (int l = 0; l < kQKK; ++l) y->qs[l] = q8k_quant(x[l], iscale);
  for (int j = 0; j < kQKK / 16; ++j) {
    int sum = 0;
    for (int l = 0; l < 16; ++l) sum += y->qs[16 * j + l];
    y->bsums[j] = static_cast<int16_t>(sum);
  }
  y->d = q8k_scale(iscale);
}

// ---- element-wise ops (cpu/ops.cpp's expressions) ----

TANDEM_HD inline float silu(float x) {
  return x / (1.0f + exp_f(-x));
}

// 1 / sqrt(mean(x^2) + eps) from the double sum of squares of n floats.
TANDEM_HD inline float rms_scale(double sum_sq, int64_t n, float eps) {
  const float mean = static_cast<float>(sum_sq / static_cast<double>(n));
  return 1.0f / sqrtf(mean + eps);
}
// Normalised and weighted element: two roundings, as ggml's rms_norm then mul.
TANDEM_HD inline float rms_apply(float x, float scale, const float* w, int64_t i) {
  const float v = x * scale;
  return w ? v * w[i] : v;
}

// base^(-2/n_rot): the ratio of consecutive RoPE frequencies.
inline float rope_theta_scale(float freq_base, int64_t n_rot) {
  return std::pow(freq_base, -2.0f / static_cast<float>(n_rot));
}
// Angle of pair i at position pos, theta built by repeated multiplication as the CPU does.
TANDEM_HD inline float rope_angle(int32_t pos, float theta_scale, float freq_scale, int64_t i) {
  float theta = static_cast<float>(pos);
  for (int64_t k = 0; k < i; ++k) theta *= theta_scale;
  return freq_scale * theta;
}
// Offsets of the two elements pair i rotates: neox (i, i + n_rot/2), else (2i, 2i+1).
TANDEM_HD inline void rope_pair(int64_t i, int64_t n_rot, bool neox, int64_t* a, int64_t* b) {
  *a = neox ? i : 2 * i;
  *b = neox ? i + n_rot / 2 : 2 * i + 1;
}
TANDEM_HD inline void rope_rotate(float* x0, float* x1, float c, float s) {
  const float a = *x0, b = *x1;
  *x0 = a * c - b * s;
  *x1 = a * s + b * c;
}

// Online softmax: running max m and running sum l of exp(score - m). An accumulator weighted
// by the probabilities is rescaled by `*corr` and then gains `*p` times the new value.
struct SoftmaxState {
  float m = -INFINITY;
  float l = 0.0f;
};
TANDEM_HD inline void online_softmax_step(SoftmaxState* st, float score, float* corr, float* p) {
  const float m_new = fmaxf(st->m, score);
  *corr = st->m == -INFINITY ? 0.0f : exp_f(st->m - m_new);
  *p = exp_f(score - m_new);
  st->l = st->l * *corr + *p;
  st->m = m_new;
}
// Merges state b into a; accumulators combine as acc_a * *corr_a + acc_b * *corr_b.
TANDEM_HD inline void online_softmax_merge(SoftmaxState* a, const SoftmaxState& b, float* corr_a,
                                           float* corr_b) {
  const float m_new = fmaxf(a->m, b.m);
  *corr_a = a->m == -INFINITY ? 0.0f : exp_f(a->m - m_new);
  *corr_b = b.m == -INFINITY ? 0.0f : exp_f(b.m - m_new);
  a->l = a->l * *corr_a + b.l * *corr_b;
  a->m = m_new;
}

}  // namespace tandem::kmath
