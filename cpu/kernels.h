// Internal interface between cpu/matmul.cpp and the SIMD kernels (cpu/avx512/, cpu/avx2/).
// Activations are quantized to the reference path's bytes (quantize_activation_row) and then
// repacked into the layout a kernel family streams fastest (ActPack).
#pragma once

#include <cstdint>

#include "cpu/matmul.h"

namespace tandem {

struct CpuFeatures;

// Activations of n_tokens rows, repacked per kernel family. Per token t:
//   q + t * q_stride         : bytes: int8/uint8 quants, or f32 / f16 / bf16 values
//   d + t * d_stride         : float scales (layout per family)
//   bias + t * bias_stride   : int32 per-lane corrections (Q4_0, Q8_0)
//   sums + t * sums_stride   : int16 per-sub-block sums of the quants (K-quants)
//   block_bias + t * block_bias_stride : int32 per-block corrections (Q8_0)
struct ActPack {
  int64_t n_tokens = 0;
  int64_t n_cols = 0;
  const uint8_t* q = nullptr;
  int64_t q_stride = 0;
  const float* d = nullptr;
  int64_t d_stride = 0;
  const int32_t* bias = nullptr;
  int64_t bias_stride = 0;
  const int16_t* sums = nullptr;
  int64_t sums_stride = 0;
  const int32_t* block_bias = nullptr;
  int64_t block_bias_stride = 0;
};

// How a kernel family wants its activations.
enum class ActLayout {
  F32,        // f32 values
  F16,        // f32 values rounded to f16 (as llama.cpp rounds them)
  BF16,       // bf16 values
  Q8_0_I8,    // q8_0 quants as int8; d: 8 copies per block; bias: -8 * (sum of 4 quants)
  Q8_0_S8,    // q8_0 quants as int8; d: 8 copies per block; bias: -128 * (sum of 4 quants);
              // block_bias: -128 * (sum of the block's 32 quants)
  Q8_K_PERM,  // q8_K quants, 32-element sub-blocks reordered 0,2,1,3,4,6,5,7; d per 256;
              // sums: 8 sub-block sums per 256
  Q8_K,       // q8_K quants in order; d per 256; sums: the 16 bsums per 256
};

// Products of at most this many tokens (decode, a few sequences decoding together) stream their
// weights once from DRAM; more tokens reuse each row from the cache. The drivers split and
// prefetch such products for the stream.
constexpr int64_t kStreamingTokens = 4;

// Computes y[t * y_stride + r] for rows [r_lo, r_hi) and tokens [t_lo, t_hi) of one tile.
using TileKernel = void (*)(const MatrixRef& w, const ActPack& a, int64_t r_lo, int64_t r_hi,
                            int64_t t_lo, int64_t t_hi, float* y, int64_t y_stride);

struct FastKernel {
  ActLayout layout;
  TileKernel run;
  const char* name;  // "avx512-vnni q8_0"
  // Row ranges handed to run start at multiples of this (an interleaved layout's group).
  int64_t row_block = 1;
};

// The fastest kernel for `type` on a CPU with `features`, or nullptr (reference path).
const FastKernel* find_fast_kernel(GgmlType type, const CpuFeatures& features);

// Bytes of scratch pack_activations needs.
int64_t act_pack_bytes(ActLayout layout, int64_t n_cols, int64_t n_tokens);
// Quantizes/converts tokens [t_lo, t_hi) of x into `scratch` (act_pack_bytes large, 64-byte
// aligned) and fills *out's pointers (same for every token range).
void pack_activations(ActLayout layout, const float* x, int64_t n_cols, int64_t n_tokens,
                      int64_t t_lo, int64_t t_hi, uint8_t* scratch, ActPack* out);

// quantize_row for the activation types (q8_0, q8_K), on AVX-512 where the CPU has it: the same
// bytes as the reference quantizers.
void quantize_activation_row(GgmlType type, const float* x, void* blocks, int64_t n_cols);

// Kernel tables of each instruction set (defined in cpu/avx512/, cpu/avx2/).
const FastKernel* avx512_kernel(GgmlType type, bool has_bf16);
const FastKernel* avx2_kernel(GgmlType type);

}  // namespace tandem
