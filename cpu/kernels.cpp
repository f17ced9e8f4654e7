// Activation repacking for the SIMD kernels and the kernel choice per CPU.
#include "cpu/kernels.h"

#include <cstring>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/half.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "cpu/quant_blocks.h"

namespace tandem {

void quantize_q8_0_avx512(const float* x, BlockQ8_0* y, int64_t nb);  // cpu/avx512/quantize_act.cpp
void quantize_q8_k_avx512(const float* x, BlockQ8K* y, int64_t nb);

namespace {

int64_t round64(int64_t bytes) {
  return (bytes + 63) / 64 * 64;
}

// Per-token section sizes in bytes (each a multiple of 64 so every token row stays aligned).
struct Sections {
  int64_t q = 0, d = 0, bias = 0, sums = 0, block_bias = 0;
};

Sections sections(ActLayout layout, int64_t n_cols) {
  Sections s;
  switch (layout) {
    case ActLayout::F32:
    case ActLayout::F16:
      s.q = n_cols * 4;
      break;
    case ActLayout::BF16:
      s.q = n_cols * 2;
      break;
    case ActLayout::Q8_0_I8:
      s.q = n_cols, s.d = n_cols / 4 * 4, s.bias = n_cols / 4 * 4;
      break;
    case ActLayout::Q8_0_S8:
      s.q = n_cols, s.d = n_cols / 4 * 4, s.bias = n_cols / 4 * 4, s.block_bias = n_cols / 32 * 4;
      break;
    case ActLayout::Q8_K_PERM:
      s.q = n_cols, s.d = n_cols / 256 * 4, s.sums = n_cols / 32 * 2;
      break;
    case ActLayout::Q8_K:
      s.q = n_cols, s.d = n_cols / 256 * 4, s.sums = n_cols / 16 * 2;
      break;
  }
  s.q = round64(s.q), s.d = round64(s.d), s.bias = round64(s.bias), s.sums = round64(s.sums);
  s.block_bias = round64(s.block_bias);
  return s;
}

void pack_q8_0(ActLayout layout, const uint8_t* blocks, int64_t n_cols, uint8_t* q, float* d,
               int32_t* bias, int32_t* block_bias) {
  const auto* b = reinterpret_cast<const BlockQ8_0*>(blocks);
  for (int64_t i = 0; i < n_cols / kQK; ++i) {
    const float scale = fp16_to_fp32(b[i].d);
    for (int k = 0; k < 8; ++k) d[i * 8 + k] = scale;
    std::memcpy(q + i * kQK, b[i].qs, kQK);
    // Kernels multiply unsigned weights (Q4_0 nibbles w + 8, Q8_0 quants w + 128) by these
    // signed quants; the lane sums need -offset * (sum of the a's) to come out as sums of w * a.
    const int offset = layout == ActLayout::Q8_0_I8 ? 8 : 128;
    int32_t block_sum = 0;
    for (int k = 0; k < 8; ++k) {
      const int8_t* a = b[i].qs + 4 * k;
      const int32_t four = a[0] + a[1] + a[2] + a[3];
      bias[i * 8 + k] = -offset * four;
      block_sum += four;
    }
    if (layout == ActLayout::Q8_0_S8) block_bias[i] = -128 * block_sum;
  }
}

void pack_q8_k(ActLayout layout, const uint8_t* blocks, int64_t n_cols, uint8_t* q, float* d,
               int16_t* sums) {
  const auto* b = reinterpret_cast<const BlockQ8K*>(blocks);
  static constexpr int kPerm[8] = {0, 2, 1, 3, 4, 6, 5, 7};
  for (int64_t i = 0; i < n_cols / kQKK; ++i) {
    d[i] = b[i].d;
    if (layout == ActLayout::Q8_K) {
      std::memcpy(q + i * kQKK, b[i].qs, kQKK);
      std::memcpy(sums + i * 16, b[i].bsums, 16 * sizeof(int16_t));
      continue;
    }
    for (int j = 0; j < 8; ++j) {
      std::memcpy(q + i * kQKK + 32 * j, b[i].qs + 32 * kPerm[j], 32);
      sums[i * 8 + j] = static_cast<int16_t>(b[i].bsums[2 * j] + b[i].bsums[2 * j + 1]);
    }
  }
}

GgmlType quant_type_of(ActLayout layout) {
  switch (layout) {
    case ActLayout::Q8_0_I8:
    case ActLayout::Q8_0_S8:
      return GgmlType::Q8_0;
    case ActLayout::Q8_K_PERM:
    case ActLayout::Q8_K:
      return GgmlType::Q8_K;
    case ActLayout::F16:
      return GgmlType::F16;
    case ActLayout::BF16:
      return GgmlType::BF16;
    case ActLayout::F32:
      break;
  }
  return GgmlType::F32;
}

}  // namespace

void quantize_activation_row(GgmlType type, const float* x, void* blocks, int64_t n_cols) {
  static const bool wide = cpu_features().has_avx512_kernels();
  if (wide && type == GgmlType::Q8_0 && n_cols % kQK == 0) {
    return quantize_q8_0_avx512(x, static_cast<BlockQ8_0*>(blocks), n_cols / kQK);
  }
  if (wide && type == GgmlType::Q8_K && n_cols % kQKK == 0) {
    return quantize_q8_k_avx512(x, static_cast<BlockQ8K*>(blocks), n_cols / kQKK);
  }
  quantize_row(type, x, blocks, n_cols);
}

int64_t act_pack_bytes(ActLayout layout, int64_t n_cols, int64_t n_tokens) {
  const Sections s = sections(layout, n_cols);
  return (s.q + s.d + s.bias + s.sums + s.block_bias) * n_tokens;
}

void pack_activations(ActLayout layout, const float* x, int64_t n_cols, int64_t n_tokens,
                      int64_t t_lo, int64_t t_hi, uint8_t* scratch, ActPack* out) {
  const Sections s = sections(layout, n_cols);
  uint8_t* q = scratch;
  auto* d = reinterpret_cast<float*>(q + s.q * n_tokens);
  auto* bias = reinterpret_cast<int32_t*>(reinterpret_cast<uint8_t*>(d) + s.d * n_tokens);
  auto* sums = reinterpret_cast<int16_t*>(reinterpret_cast<uint8_t*>(bias) + s.bias * n_tokens);
  auto* block_bias =
      reinterpret_cast<int32_t*>(reinterpret_cast<uint8_t*>(sums) + s.sums * n_tokens);
  *out = ActPack{n_tokens, n_cols,     q,    s.q,        d,          s.d / 4,
                 bias,     s.bias / 4, sums, s.sums / 2, block_bias, s.block_bias / 4};

  const GgmlType qt = quant_type_of(layout);
  thread_local std::vector<uint8_t> blocks;
  blocks.resize(static_cast<size_t>(row_bytes(qt, n_cols)));
  for (int64_t t = t_lo; t < t_hi; ++t) {
    const float* xt = x + t * n_cols;
    uint8_t* qt_row = q + t * s.q;
    if (layout == ActLayout::F16) {  // f16-rounded values kept as f32: converted once here
      round_fp16_row(xt, n_cols, reinterpret_cast<float*>(qt_row));
      continue;
    }
    if (layout == ActLayout::F32 || layout == ActLayout::BF16) {
      quantize_row(qt, xt, qt_row, n_cols);
      continue;
    }
    quantize_activation_row(qt, xt, blocks.data(), n_cols);
    float* dt = d + t * (s.d / 4);
    if (qt == GgmlType::Q8_0) {
      pack_q8_0(layout, blocks.data(), n_cols, qt_row, dt, bias + t * (s.bias / 4),
                block_bias + t * (s.block_bias / 4));
    } else {
      pack_q8_k(layout, blocks.data(), n_cols, qt_row, dt, sums + t * (s.sums / 2));
    }
  }
}

const FastKernel* find_fast_kernel(GgmlType type, const CpuFeatures& f) {
  if (f.has_avx512_kernels()) {
    if (const FastKernel* k = avx512_kernel(type, f.avx512bf16)) return k;
  }
  if (f.has_avx2_kernels()) return avx2_kernel(type);
  return nullptr;
}

}  // namespace tandem
