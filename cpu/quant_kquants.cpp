// Reference K-quants. Layouts follow ggml exactly; the weight quantizers are simpler than
// llama.cpp's (no iterative scale search) but produce valid blocks any ggml reader decodes alike.
#include "cpu/quant_kquants.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "cpu/half.h"

namespace tandem::kquant {
namespace {

// Element values of one Q4_K block's nibbles, in element order (0..15).
void unpack(const BlockQ4K& b, uint8_t* out) {
  for (int chunk = 0; chunk < 4; ++chunk) {
    const uint8_t* q = b.qs + 32 * chunk;
    for (int l = 0; l < 32; ++l) {
      out[64 * chunk + l] = q[l] & 0xF;
      out[64 * chunk + 32 + l] = q[l] >> 4;
    }
  }
}

// Q5_K element values (0..31) in element order.
void unpack(const BlockQ5K& b, uint8_t* out) {
  for (int chunk = 0; chunk < 4; ++chunk) {
    const uint8_t* q = b.qs + 32 * chunk;
    const int lo_bit = 2 * chunk;
    const int hi_bit = 2 * chunk + 1;
    for (int l = 0; l < 32; ++l) {
      out[64 * chunk + l] = static_cast<uint8_t>((q[l] & 0xF) | (((b.qh[l] >> lo_bit) & 1) << 4));
      out[64 * chunk + 32 + l] =
          static_cast<uint8_t>((q[l] >> 4) | (((b.qh[l] >> hi_bit) & 1) << 4));
    }
  }
}

// Q6_K element values (-32..31) in element order. Each 128-element half uses 64 ql bytes
// (low nibbles: elements 0-31 and 32-63, high nibbles: 64-95 and 96-127) and 32 qh bytes.
void unpack_q6k(const BlockQ6K& b, int8_t* out) {
  for (int half = 0; half < 2; ++half) {
    const uint8_t* ql = b.ql + 64 * half;
    const uint8_t* qh = b.qh + 32 * half;
    int8_t* o = out + 128 * half;
    for (int l = 0; l < 32; ++l) {
      o[l] = static_cast<int8_t>(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
      o[l + 32] = static_cast<int8_t>(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
      o[l + 64] = static_cast<int8_t>(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
      o[l + 96] = static_cast<int8_t>(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
    }
  }
}

// Packs eight 6-bit scales and mins the way k4_scale_min unpacks them.
void pack_scale_min(const uint8_t* ls, const uint8_t* lm, uint8_t* scales) {
  std::memset(scales, 0, 12);
  for (int j = 0; j < 8; ++j) {
    if (j < 4) {
      scales[j] = ls[j];
      scales[j + 4] = lm[j];
    } else {
      scales[j + 4] = static_cast<uint8_t>((ls[j] & 0xF) | ((lm[j] & 0xF) << 4));
      scales[j - 4] |= static_cast<uint8_t>((ls[j] >> 4) << 6);
      scales[j] |= static_cast<uint8_t>((lm[j] >> 4) << 6);
    }
  }
}

// Affine quantization shared by Q4_K (n_max 15) and Q5_K (n_max 31): per sub-block of 32
// x ~ d*ls*q - dmin*lm with q in [0, n_max]. Writes d, dmin, scales and the levels L.
void quantize_affine_k(const float* x, int n_max, uint16_t* d_out, uint16_t* dmin_out,
                       uint8_t* scales, uint8_t* levels) {
  float sub_scale[8], sub_min[8];
  float max_scale = 0, max_min = 0;
  for (int j = 0; j < 8; ++j) {
    const float* xs = x + 32 * j;
    const float lo = std::min(0.0f, *std::min_element(xs, xs + 32));
    const float hi = *std::max_element(xs, xs + 32);
    sub_scale[j] = (hi - lo) / static_cast<float>(n_max);
    sub_min[j] = -lo;
    max_scale = std::max(max_scale, sub_scale[j]);
    max_min = std::max(max_min, sub_min[j]);
  }
  const float inv_scale = max_scale > 0 ? 63.f / max_scale : 0.f;
  const float inv_min = max_min > 0 ? 63.f / max_min : 0.f;
  uint8_t ls[8], lm[8];
  for (int j = 0; j < 8; ++j) {
    ls[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_scale * sub_scale[j])));
    lm[j] = static_cast<uint8_t>(std::min(63, nearest_int(inv_min * sub_min[j])));
  }
  *d_out = fp32_to_fp16(max_scale / 63.f);
  *dmin_out = fp32_to_fp16(max_min / 63.f);
  pack_scale_min(ls, lm, scales);
  // Levels are chosen against the stored (rounded) scales so dequantization is consistent.
  const float d = fp16_to_fp32(*d_out);
  const float dmin = fp16_to_fp32(*dmin_out);
  for (int j = 0; j < 8; ++j) {
    const float dq = d * ls[j];
    const float dm = dmin * lm[j];
    for (int l = 0; l < 32; ++l) {
      const int q = dq > 0 ? nearest_int((x[32 * j + l] + dm) / dq) : 0;
      levels[32 * j + l] = static_cast<uint8_t>(std::clamp(q, 0, n_max));
    }
  }
}

// Q4_K and Q5_K share the 8 sub-blocks of 32 with 6-bit scales and mins (k4_scale_min); only
// how the element values are stored differs (unpack).
template <class Block>
void dequantize_k4(const Block* x, float* y, int64_t n_blocks) {
  uint8_t q[kQKK];
  for (int64_t i = 0; i < n_blocks; ++i, y += kQKK) {
    const float d = fp16_to_fp32(x[i].d);
    const float dmin = fp16_to_fp32(x[i].dmin);
    unpack(x[i], q);
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      k4_scale_min(j, x[i].scales, &sc, &m);
      const float d1 = d * sc, m1 = dmin * m;
      for (int l = 0; l < 32; ++l) y[32 * j + l] = d1 * q[32 * j + l] - m1;
    }
  }
}

template <class Block>
float dot_k4_q8k(const Block* x, const BlockQ8K* y, int64_t n_blocks) {
  uint8_t q[kQKK];
  float sum = 0;
  for (int64_t i = 0; i < n_blocks; ++i) {
    unpack(x[i], q);
    int32_t sum_q = 0, sum_m = 0;
    for (int j = 0; j < 8; ++j) {
      uint8_t sc, m;
      k4_scale_min(j, x[i].scales, &sc, &m);
      int32_t s = 0;
      for (int l = 0; l < 32; ++l) s += q[32 * j + l] * y[i].qs[32 * j + l];
      sum_q += sc * s;
      sum_m += m * (y[i].bsums[2 * j] + y[i].bsums[2 * j + 1]);
    }
    sum += fp16_to_fp32(x[i].d) * y[i].d * static_cast<float>(sum_q) -
           fp16_to_fp32(x[i].dmin) * y[i].d * static_cast<float>(sum_m);
  }
  return sum;
}

}  // namespace

void dequantize_q4k(const BlockQ4K* x, float* y, int64_t n_blocks) {
  dequantize_k4(x, y, n_blocks);
}

void dequantize_q5k(const BlockQ5K* x, float* y, int64_t n_blocks) {
  dequantize_k4(x, y, n_blocks);
}

void dequantize_q6k(const BlockQ6K* x, float* y, int64_t n_blocks) {
  int8_t q[kQKK];
  for (int64_t i = 0; i < n_blocks; ++i, y += kQKK) {
    const float d = fp16_to_fp32(x[i].d);
    unpack_q6k(x[i], q);
    for (int l = 0; l < kQKK; ++l) y[l] = d * x[i].scales[l / 16] * q[l];
  }
}

void dequantize_q8k(const BlockQ8K* x, float* y, int64_t n_blocks) {
  for (int64_t i = 0; i < n_blocks; ++i, y += kQKK) {
    for (int l = 0; l < kQKK; ++l) y[l] = x[i].d * x[i].qs[l];
  }
}

void quantize_q4k(const float* x, BlockQ4K* y, int64_t n_blocks) {
  uint8_t levels[kQKK];
  for (int64_t i = 0; i < n_blocks; ++i, x += kQKK) {
    quantize_affine_k(x, 15, &y[i].d, &y[i].dmin, y[i].scales, levels);
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        y[i].qs[32 * chunk + l] =
            static_cast<uint8_t>(levels[64 * chunk + l] | (levels[64 * chunk + 32 + l] << 4));
      }
    }
  }
}

void quantize_q5k(const float* x, BlockQ5K* y, int64_t n_blocks) {
  uint8_t levels[kQKK];
  for (int64_t i = 0; i < n_blocks; ++i, x += kQKK) {
    quantize_affine_k(x, 31, &y[i].d, &y[i].dmin, y[i].scales, levels);
    std::memset(y[i].qh, 0, sizeof y[i].qh);
    for (int chunk = 0; chunk < 4; ++chunk) {
      for (int l = 0; l < 32; ++l) {
        const uint8_t lo = levels[64 * chunk + l];
        const uint8_t hi = levels[64 * chunk + 32 + l];
        y[i].qs[32 * chunk + l] = static_cast<uint8_t>((lo & 0xF) | ((hi & 0xF) << 4));
        y[i].qh[l] |=
            static_cast<uint8_t>(((lo >> 4) << (2 * chunk)) | ((hi >> 4) << (2 * chunk + 1)));
      }
    }
  }
}

namespace {

// Chooses the int8 sub-block scales and levels (-32..31) of one Q6_K block.
void q6k_levels(const float* x, BlockQ6K* y, int8_t* levels) {
  float sub_scale[16];
  float max_scale = 0, max_abs_scale = 0;
  for (int j = 0; j < 16; ++j) {
    float amax = 0, vmax = 0;
    for (int l = 0; l < 16; ++l) {
      if (std::fabs(x[16 * j + l]) > amax) {
        amax = std::fabs(x[16 * j + l]);
        vmax = x[16 * j + l];
      }
    }
    sub_scale[j] = vmax / -32.f;  // the extreme value lands on level -32, the full range
    if (std::fabs(sub_scale[j]) > max_abs_scale) {
      max_abs_scale = std::fabs(sub_scale[j]);
      max_scale = sub_scale[j];
    }
  }
  const float iscale = max_abs_scale > 0 ? -128.f / max_scale : 0.f;
  y->d = fp32_to_fp16(max_abs_scale > 0 ? 1.f / iscale : 0.f);
  const float d = fp16_to_fp32(y->d);
  for (int j = 0; j < 16; ++j) {
    y->scales[j] = static_cast<int8_t>(std::clamp(nearest_int(iscale * sub_scale[j]), -128, 127));
    const float dq = d * y->scales[j];
    for (int l = 0; l < 16; ++l) {
      const int q = dq != 0 ? nearest_int(x[16 * j + l] / dq) : 0;
      levels[16 * j + l] = static_cast<int8_t>(std::clamp(q, -32, 31));
    }
  }
}

}  // namespace

void quantize_q6k(const float* x, BlockQ6K* y, int64_t n_blocks) {
  int8_t levels[kQKK];
  for (int64_t i = 0; i < n_blocks; ++i, x += kQKK) {
    q6k_levels(x, &y[i], levels);
    for (int half = 0; half < 2; ++half) {
      uint8_t* ql = y[i].ql + 64 * half;
      uint8_t* qh = y[i].qh + 32 * half;
      const int8_t* lv = levels + 128 * half;
      for (int l = 0; l < 32; ++l) {
        const int q1 = lv[l] + 32, q2 = lv[l + 32] + 32, q3 = lv[l + 64] + 32, q4 = lv[l + 96] + 32;
        ql[l] = static_cast<uint8_t>((q1 & 0xF) | ((q3 & 0xF) << 4));
        ql[l + 32] = static_cast<uint8_t>((q2 & 0xF) | ((q4 & 0xF) << 4));
        qh[l] = static_cast<uint8_t>((q1 >> 4) | ((q2 >> 4) << 2) | ((q3 >> 4) << 4) |
                                     ((q4 >> 4) << 6));
      }
    }
  }
}

void quantize_q8k(const float* x, BlockQ8K* y, int64_t n_blocks) {
  for (int64_t i = 0; i < n_blocks; ++i, x += kQKK) {
    float amax = 0, vmax = 0;  // first element of largest magnitude, with its sign
    for (int l = 0; l < kQKK; ++l) {
      if (std::fabs(x[l]) > amax) {
        amax = std::fabs(x[l]);
        vmax = x[l];
      }
    }
    if (amax == 0) {
      y[i].d = 0;
      std::memset(y[i].qs, 0, sizeof y[i].qs);
      std::memset(y[i].bsums, 0, sizeof y[i].bsums);
      continue;
    }
    const float iscale = -127.f / vmax;
    for (int l = 0; l < kQKK; ++l) {
      y[i].qs[l] = static_cast<int8_t>(std::min(127, nearest_int(iscale * x[l])));
    }
    for (int j = 0; j < kQKK / 16; ++j) {
      int sum = 0;
      for (int l = 0; l < 16; ++l) sum += y[i].qs[16 * j + l];
      y[i].bsums[j] = static_cast<int16_t>(sum);
    }
    y[i].d = 1 / iscale;
  }
}

float dot_q4k_q8k(const BlockQ4K* x, const BlockQ8K* y, int64_t n_blocks) {
  return dot_k4_q8k(x, y, n_blocks);
}

float dot_q5k_q8k(const BlockQ5K* x, const BlockQ8K* y, int64_t n_blocks) {
  return dot_k4_q8k(x, y, n_blocks);
}

float dot_q6k_q8k(const BlockQ6K* x, const BlockQ8K* y, int64_t n_blocks) {
  int8_t q[kQKK];
  float sum = 0;
  for (int64_t i = 0; i < n_blocks; ++i) {
    unpack_q6k(x[i], q);
    int32_t sum_q = 0;
    for (int j = 0; j < 16; ++j) {
      int32_t s = 0;
      for (int l = 0; l < 16; ++l) s += q[16 * j + l] * y[i].qs[16 * j + l];
      sum_q += x[i].scales[j] * s;
    }
    sum += fp16_to_fp32(x[i].d) * y[i].d * static_cast<float>(sum_q);
  }
  return sum;
}

}  // namespace tandem::kquant
