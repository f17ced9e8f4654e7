// Reference quantization for the float and 32-element block formats, plus the per-type dispatch.
// K-quants live in cpu/quant_kquants.cpp.
#include "cpu/quant.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <stdexcept>
#include <string>

#include "cpu/half.h"
#include "cpu/ops.h"
#include "cpu/quant_blocks.h"
#include "cpu/quant_kquants.h"

namespace tandem {
namespace {

[[noreturn]] void unsupported(const char* what, GgmlType type) {
  throw std::invalid_argument(std::string(what) + ": unsupported type " +
                              std::string(type_name(type)));
}

void check_multiple(GgmlType type, int64_t n) {
  const int64_t block = traits(type).block_elems;
  if (n < 0 || n % block != 0) {
    throw std::invalid_argument("row of " + std::to_string(n) + " elements is not a multiple of " +
                                std::to_string(block) + " (block size of " +
                                std::string(type_name(type)) + ")");
  }
}

// ---- dequantization of the 32-element formats ----

void dequantize_q4_0(const BlockQ4_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>((x[i].qs[j] & 0xF) - 8) * d;
      y[j + 16] = static_cast<float>((x[i].qs[j] >> 4) - 8) * d;
    }
  }
}

void dequantize_q4_1(const BlockQ4_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = static_cast<float>(x[i].qs[j] & 0xF) * d + m;
      y[j + 16] = static_cast<float>(x[i].qs[j] >> 4) * d + m;
    }
  }
}

// The 5-bit value of element j (0..31) of a Q5_0/Q5_1 block.
int q5_value(const uint8_t* qh_bytes, const uint8_t* qs, int j) {
  uint32_t qh;
  std::memcpy(&qh, qh_bytes, sizeof qh);
  const int low = j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
  return low | static_cast<int>(((qh >> j) & 1) << 4);
}

void dequantize_q5_0(const BlockQ5_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5_value(x[i].qh, x[i].qs, j) - 16) * d;
  }
}

void dequantize_q5_1(const BlockQ5_1* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d), m = fp16_to_fp32(x[i].m);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(q5_value(x[i].qh, x[i].qs, j)) * d + m;
  }
}

void dequantize_q8_0(const BlockQ8_0* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = fp16_to_fp32(x[i].d);
    for (int j = 0; j < kQK; ++j) y[j] = static_cast<float>(x[i].qs[j]) * d;
  }
}

void dequantize_mxfp4(const BlockMxfp4* x, float* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, y += kQK) {
    const float d = e8m0_to_fp32_half(x[i].e);
    for (int j = 0; j < kQK / 2; ++j) {
      y[j] = kMxfp4Values[x[i].qs[j] & 0xF] * d;
      y[j + 16] = kMxfp4Values[x[i].qs[j] >> 4] * d;
    }
  }
}

// ---- quantization of the 32-element formats (llama.cpp's quantize_row_*_ref rules) ----

// Element of largest magnitude (first one on ties), with its sign.
float signed_absmax(const float* x, int n) {
  float amax = 0, vmax = 0;
  for (int j = 0; j < n; ++j) {
    if (std::fabs(x[j]) > amax) {
      amax = std::fabs(x[j]);
      vmax = x[j];
    }
  }
  return vmax;
}

void quantize_q4_0(const float* x, BlockQ4_0* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -8;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j] * id + 8.5f)));
      const int q1 = std::min(15, static_cast<int>(static_cast<int8_t>(x[j + 16] * id + 8.5f)));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

void quantize_q4_1(const float* x, BlockQ4_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float lo = *std::min_element(x, x + kQK), hi = *std::max_element(x, x + kQK);
    const float d = (hi - lo) / 15;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(lo);
    for (int j = 0; j < kQK / 2; ++j) {
      const int q0 = std::min(15, static_cast<int>(static_cast<int8_t>((x[j] - lo) * id + 0.5f)));
      const int q1 =
          std::min(15, static_cast<int>(static_cast<int8_t>((x[j + 16] - lo) * id + 0.5f)));
      y[i].qs[j] = static_cast<uint8_t>(q0 | (q1 << 4));
    }
  }
}

// Writes the low nibbles and the fifth bits of 32 five-bit values.
void pack_q5(const int* q, uint8_t* qh_bytes, uint8_t* qs) {
  uint32_t qh = 0;
  for (int j = 0; j < kQK / 2; ++j) {
    qs[j] = static_cast<uint8_t>((q[j] & 0xF) | ((q[j + 16] & 0xF) << 4));
    qh |= static_cast<uint32_t>((q[j] >> 4) & 1) << j;
    qh |= static_cast<uint32_t>((q[j + 16] >> 4) & 1) << (j + 16);
  }
  std::memcpy(qh_bytes, &qh, sizeof qh);
}

void quantize_q5_0(const float* x, BlockQ5_0* y, int64_t nb) {
  int q[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float d = signed_absmax(x, kQK) / -16;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    for (int j = 0; j < kQK; ++j) {
      q[j] = std::min(31, static_cast<int>(static_cast<int8_t>(x[j] * id + 16.5f)));
    }
    pack_q5(q, y[i].qh, y[i].qs);
  }
}

void quantize_q5_1(const float* x, BlockQ5_1* y, int64_t nb) {
  int q[kQK];
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    const float lo = *std::min_element(x, x + kQK), hi = *std::max_element(x, x + kQK);
    const float d = (hi - lo) / 31;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    y[i].d = fp32_to_fp16(d);
    y[i].m = fp32_to_fp16(lo);
    for (int j = 0; j < kQK; ++j) q[j] = static_cast<uint8_t>((x[j] - lo) * id + 0.5f);
    pack_q5(q, y[i].qh, y[i].qs);
  }
}

// What llama.cpp's x86 (AVX2/AVX-512) quantize_row_q8_0 computes: the multiplier is 127/amax
// (not 1/d) and products are rounded half to even; this decides the frequent exact ties.
// Returns the f32 scale (before f16 rounding), which q8_1's sum term uses; *sum_out = sum of qs.
float quantize_q8_block(const float* x, uint16_t* d_out, int8_t* qs, int* sum_out) {
  float amax = 0;
  for (int j = 0; j < kQK; ++j) amax = std::max(amax, std::fabs(x[j]));
  const float d = amax / 127.f;
  *d_out = fp32_to_fp16(d);
  const float id = amax != 0 ? 127.f / amax : 0.0f;
  int sum = 0;
  for (int j = 0; j < kQK; ++j) {
    qs[j] = static_cast<int8_t>(std::nearbyint(x[j] * id));  // default FP env: ties to even
    sum += qs[j];
  }
  *sum_out = sum;
  return d;
}

void quantize_q8_0(const float* x, BlockQ8_0* y, int64_t nb) {
  int sum;
  for (int64_t i = 0; i < nb; ++i, x += kQK) quantize_q8_block(x, &y[i].d, y[i].qs, &sum);
}

void quantize_q8_1(const float* x, BlockQ8_1* y, int64_t nb) {
  for (int64_t i = 0; i < nb; ++i, x += kQK) {
    int sum;
    const float d = quantize_q8_block(x, &y[i].d, y[i].qs, &sum);
    y[i].s = fp32_to_fp16(d * static_cast<float>(sum));
  }
}

// ---- dot products of the 32-element formats (llama.cpp's generic vec_dot rules) ----

template <class Block, class Value>
float dot_blocks_q8_0(const Block* x, const BlockQ8_0* y, int64_t nb, Value value) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += value(x[i], j) * y[i].qs[j];
    sum += static_cast<float>(sumi) * (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d));
  }
  return sum;
}

template <class Block, class Value>
float dot_blocks_q8_1(const Block* x, const BlockQ8_1* y, int64_t nb, Value value) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += value(x[i], j) * y[i].qs[j];
    sum += (fp16_to_fp32(x[i].d) * fp16_to_fp32(y[i].d)) * static_cast<float>(sumi) +
           fp16_to_fp32(x[i].m) * fp16_to_fp32(y[i].s);
  }
  return sum;
}

int nibble(const uint8_t* qs, int j) {
  return j < 16 ? (qs[j] & 0xF) : (qs[j - 16] >> 4);
}

float dot_mxfp4_q8_0(const BlockMxfp4* x, const BlockQ8_0* y, int64_t nb) {
  float sum = 0;
  for (int64_t i = 0; i < nb; ++i) {
    int32_t sumi = 0;
    for (int j = 0; j < kQK; ++j) sumi += kMxfp4Values[nibble(x[i].qs, j)] * y[i].qs[j];
    sum += e8m0_to_fp32_half(x[i].e) * fp16_to_fp32(y[i].d) * static_cast<float>(sumi);
  }
  return sum;
}

// Element i of a row that may sit at any byte address (rows of any stride are allowed).
template <class T>
T load(const void* row, int64_t i) {
  T v;
  std::memcpy(&v, static_cast<const uint8_t*>(row) + i * static_cast<int64_t>(sizeof(T)), sizeof v);
  return v;
}

template <class Convert>
float dot_floats(const void* w, const void* a, int64_t n, Convert convert) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += static_cast<double>(convert(load<uint16_t>(w, i))) * convert(load<uint16_t>(a, i));
  }
  return static_cast<float>(sum);
}

}  // namespace

void dequantize_row(GgmlType type, const void* src, float* dst, int64_t n) {
  check_multiple(type, n);
  const int64_t nb = n / traits(type).block_elems;
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) dst[i] = fp16_to_fp32(load<uint16_t>(src, i));
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) dst[i] = bf16_to_fp32(load<uint16_t>(src, i));
      return;
    case GgmlType::Q4_0:
      return dequantize_q4_0(static_cast<const BlockQ4_0*>(src), dst, nb);
    case GgmlType::Q4_1:
      return dequantize_q4_1(static_cast<const BlockQ4_1*>(src), dst, nb);
    case GgmlType::Q5_0:
      return dequantize_q5_0(static_cast<const BlockQ5_0*>(src), dst, nb);
    case GgmlType::Q5_1:
      return dequantize_q5_1(static_cast<const BlockQ5_1*>(src), dst, nb);
    case GgmlType::Q8_0:
      return dequantize_q8_0(static_cast<const BlockQ8_0*>(src), dst, nb);
    case GgmlType::Q8_1: {  // same quants as q8_0, different block size
      const auto* b = static_cast<const BlockQ8_1*>(src);
      for (int64_t i = 0; i < nb; ++i) {
        for (int j = 0; j < kQK; ++j) dst[i * kQK + j] = fp16_to_fp32(b[i].d) * b[i].qs[j];
      }
      return;
    }
    case GgmlType::Q4_K:
      return kquant::dequantize_q4k(static_cast<const BlockQ4K*>(src), dst, nb);
    case GgmlType::Q5_K:
      return kquant::dequantize_q5k(static_cast<const BlockQ5K*>(src), dst, nb);
    case GgmlType::Q6_K:
      return kquant::dequantize_q6k(static_cast<const BlockQ6K*>(src), dst, nb);
    case GgmlType::Q8_K:
      return kquant::dequantize_q8k(static_cast<const BlockQ8K*>(src), dst, nb);
    case GgmlType::MXFP4:
      return dequantize_mxfp4(static_cast<const BlockMxfp4*>(src), dst, nb);
    default:
      unsupported("dequantize_row", type);
  }
}

bool can_quantize(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q4_0:
    case GgmlType::Q4_1:
    case GgmlType::Q5_0:
    case GgmlType::Q5_1:
    case GgmlType::Q8_0:
    case GgmlType::Q8_1:
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
    case GgmlType::Q8_K:
      return true;
    default:
      return false;
  }
}

void quantize_row(GgmlType type, const float* src, void* dst, int64_t n) {
  check_multiple(type, n);
  const int64_t nb = n / traits(type).block_elems;
  switch (type) {
    case GgmlType::F32:
      std::memcpy(dst, src, static_cast<size_t>(n) * sizeof(float));
      return;
    case GgmlType::F16:
      to_fp16_row(src, n, static_cast<uint16_t*>(dst));
      return;
    case GgmlType::BF16: {
      auto* h = static_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < n; ++i) h[i] = fp32_to_bf16(src[i]);
      return;
    }
    case GgmlType::Q4_0:
      return quantize_q4_0(src, static_cast<BlockQ4_0*>(dst), nb);
    case GgmlType::Q4_1:
      return quantize_q4_1(src, static_cast<BlockQ4_1*>(dst), nb);
    case GgmlType::Q5_0:
      return quantize_q5_0(src, static_cast<BlockQ5_0*>(dst), nb);
    case GgmlType::Q5_1:
      return quantize_q5_1(src, static_cast<BlockQ5_1*>(dst), nb);
    case GgmlType::Q8_0:
      return quantize_q8_0(src, static_cast<BlockQ8_0*>(dst), nb);
    case GgmlType::Q8_1:
      return quantize_q8_1(src, static_cast<BlockQ8_1*>(dst), nb);
    case GgmlType::Q4_K:
      return kquant::quantize_q4k(src, static_cast<BlockQ4K*>(dst), nb);
    case GgmlType::Q5_K:
      return kquant::quantize_q5k(src, static_cast<BlockQ5K*>(dst), nb);
    case GgmlType::Q6_K:
      return kquant::quantize_q6k(src, static_cast<BlockQ6K*>(dst), nb);
    case GgmlType::Q8_K:
      return kquant::quantize_q8k(src, static_cast<BlockQ8K*>(dst), nb);
    default:
      unsupported("quantize_row", type);
  }
}

GgmlType vec_dot_type(GgmlType weight_type) {
  switch (weight_type) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
      return weight_type;
    case GgmlType::Q4_0:
    case GgmlType::Q5_0:
    case GgmlType::Q8_0:
    case GgmlType::MXFP4:
      return GgmlType::Q8_0;
    case GgmlType::Q4_1:
    case GgmlType::Q5_1:
      return GgmlType::Q8_1;
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      return GgmlType::Q8_K;
    default:
      unsupported("vec_dot_type", weight_type);
  }
}

float vec_dot_ref(GgmlType weight_type, int64_t n, const void* w, const void* a) {
  check_multiple(weight_type, n);
  const int64_t nb = n / traits(weight_type).block_elems;
  const auto* a8 = static_cast<const BlockQ8_0*>(a);
  const auto* a81 = static_cast<const BlockQ8_1*>(a);
  const auto* a8k = static_cast<const BlockQ8K*>(a);
  switch (weight_type) {
    case GgmlType::F32: {
      double sum = 0;
      for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(load<float>(w, i)) * load<float>(a, i);
      return static_cast<float>(sum);
    }
    case GgmlType::F16:
      return dot_floats(w, a, n, fp16_to_fp32);
    case GgmlType::BF16:
      return dot_floats(w, a, n, bf16_to_fp32);
    case GgmlType::Q4_0:
      return dot_blocks_q8_0(static_cast<const BlockQ4_0*>(w), a8, nb,
                             [](const BlockQ4_0& b, int j) { return nibble(b.qs, j) - 8; });
    case GgmlType::Q5_0:
      return dot_blocks_q8_0(
          static_cast<const BlockQ5_0*>(w), a8, nb,
          [](const BlockQ5_0& b, int j) { return q5_value(b.qh, b.qs, j) - 16; });
    case GgmlType::Q8_0:
      return dot_blocks_q8_0(static_cast<const BlockQ8_0*>(w), a8, nb,
                             [](const BlockQ8_0& b, int j) { return static_cast<int>(b.qs[j]); });
    case GgmlType::Q4_1:
      return dot_blocks_q8_1(static_cast<const BlockQ4_1*>(w), a81, nb,
                             [](const BlockQ4_1& b, int j) { return nibble(b.qs, j); });
    case GgmlType::Q5_1:
      return dot_blocks_q8_1(static_cast<const BlockQ5_1*>(w), a81, nb,
                             [](const BlockQ5_1& b, int j) { return q5_value(b.qh, b.qs, j); });
    case GgmlType::MXFP4:
      return dot_mxfp4_q8_0(static_cast<const BlockMxfp4*>(w), a8, nb);
    case GgmlType::Q4_K:
      return kquant::dot_q4k_q8k(static_cast<const BlockQ4K*>(w), a8k, nb);
    case GgmlType::Q5_K:
      return kquant::dot_q5k_q8k(static_cast<const BlockQ5K*>(w), a8k, nb);
    case GgmlType::Q6_K:
      return kquant::dot_q6k_q8k(static_cast<const BlockQ6K*>(w), a8k, nb);
    default:
      unsupported("vec_dot_ref", weight_type);
  }
}

}  // namespace tandem
