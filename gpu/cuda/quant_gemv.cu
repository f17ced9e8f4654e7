// Fused dequantize-dot GEMV: one warp per weight row, lanes over blocks (K-quants: a group of 8
// lanes per super-block, one 32-element unit each, integer partials summed across the group).
// The per-block math is gpu/kernel_math.h, tested on the host against cpu/quant.h.
#include <string>

#include "gpu/cuda/common.cuh"
#include "gpu/cuda/quant_gemv.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

using namespace kmath;

constexpr int kWarpsPerBlock = 4;

// ---- activation quantization: one warp per q8_0/q8_1 block of 32 ----

template <bool kWithSum>
__global__ void quantize_q8_32_kernel(const float* x, int64_t n_blocks, void* out, bool as_floats) {
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (b >= n_blocks) return;  // whole warps leave together
  const float v = x[b * kQK + lane];
  const float amax = warp_max(fabsf(v));
  uint16_t d16;
  float inv;
  [[maybe_unused]] const float d = q8_scale(amax, &d16, &inv);
  const int8_t q = q8_quant(v, inv);
  if (as_floats) {
    static_cast<float*>(out)[b * kQK + lane] = static_cast<float>(q) * fp16_to_fp32(d16);
    return;
  }
  if constexpr (kWithSum) {
    const int sum = warp_sum(static_cast<int>(q));
    BlockQ8_1& blk = static_cast<BlockQ8_1*>(out)[b];
    blk.qs[lane] = q;
    if (lane == 0) {
      blk.d = d16;
      blk.s = fp32_to_fp16(d * static_cast<float>(sum));
    }
  } else {
    BlockQ8_0& blk = static_cast<BlockQ8_0*>(out)[b];
    blk.qs[lane] = q;
    if (lane == 0) blk.d = d16;
  }
}

// ---- q8_K: one warp per 256-element block, 8 values per lane ----

__global__ void quantize_q8_k_kernel(const float* x, int64_t n_blocks, void* out, bool as_floats) {
  const int64_t b = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (b >= n_blocks) return;
  float v[8];
  float amax = 0, vmax = 0;
  int idx = 1 << 30;
  for (int i = 0; i < 8; ++i) {
    v[i] = x[b * kQKK + lane + 32 * i];
    if (fabsf(v[i]) > amax) {  // ascending element order within the lane: first one wins
      amax = fabsf(v[i]);
      vmax = v[i];
      idx = lane + 32 * i;
    }
  }
  // Largest magnitude across lanes, lowest element index on ties (the CPU's scan order).
  for (int offset = 16; offset > 0; offset >>= 1) {
    const float o_amax = __shfl_xor_sync(kFullMask, amax, offset);
    const float o_vmax = __shfl_xor_sync(kFullMask, vmax, offset);
    const int o_idx = __shfl_xor_sync(kFullMask, idx, offset);
    if (o_amax > amax || (o_amax == amax && o_idx < idx)) {
      amax = o_amax;
      vmax = o_vmax;
      idx = o_idx;
    }
  }
  const float iscale = q8k_iscale(vmax);
  const float d = q8k_scale(iscale);
  BlockQ8K* blk = static_cast<BlockQ8K*>(out) + b;
  for (int i = 0; i < 8; ++i) {
    const int8_t q = q8k_quant(v[i], iscale);
    if (as_floats) {
      static_cast<float*>(out)[b * kQKK + lane + 32 * i] = d * static_cast<float>(q);
      continue;
    }
    blk->qs[lane + 32 * i] = q;
    // Elements lane + 32 i form bsum group 2i (lanes 0-15) or 2i+1 (lanes 16-31).
    const int s = group_sum(static_cast<int>(q), 16);
    if ((lane & 15) == 0) blk->bsums[2 * i + (lane >> 4)] = static_cast<int16_t>(s);
  }
  if (!as_floats && lane == 0) blk->d = d;
}

// ---- GEMV ----

// Row `row` of w against n_tokens activation rows; called by whole warps.
template <class T>
__device__ void gemv_quant_row(const uint8_t* w, int64_t row_stride, int64_t n_rows,
                               int64_t n_blocks, const typename T::Act* act, int n_tokens, float* y,
                               int64_t row) {
  using Block = typename T::Block;
  const int lane = threadIdx.x & 31;
  const Block* wr = reinterpret_cast<const Block*>(w + row * row_stride);
  float acc[kMaxGemvTokens] = {};
  const int64_t n_units = n_blocks * T::kUnits;
  // Every lane runs the same iterations so the group shuffles see the whole warp.
  for (int64_t base = 0; base < n_units; base += 32) {
    const int64_t u = base + lane;
    const bool active = u < n_units;  // K-quants: whole 8-lane groups are (in)active together
    const int64_t b = active ? u / T::kUnits : 0;
    const int unit = static_cast<int>(u % T::kUnits);
#pragma unroll
    for (int t = 0; t < kMaxGemvTokens; ++t) {
      if (t >= n_tokens) break;
      const typename T::Act& a = act[t * n_blocks + b];
      int sum_m = 0;
      int sum_q = active ? T::dot_unit(wr[b], a, unit, &sum_m) : 0;
      if constexpr (T::kUnits > 1) {
        sum_q = group_sum(sum_q, T::kUnits);
        sum_m = group_sum(sum_m, T::kUnits);
      }
      if (active && unit == 0) acc[t] += T::combine(wr[b], a, sum_q, sum_m);
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxGemvTokens; ++t) {
    if (t >= n_tokens) break;
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * n_rows + row] = s;
  }
}

template <class T>
__global__ void gemv_quant_kernel(const uint8_t* w, int64_t row_stride, int64_t n_rows,
                                  int64_t n_blocks, const typename T::Act* act, int n_tokens,
                                  float* y) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= n_rows) return;  // uniform per warp
  gemv_quant_row<T>(w, row_stride, n_rows, n_blocks, act, n_tokens, y, row);
}

// blockIdx.y picks the matrix; the arguments are one parameter block.
template <class T>
__global__ void gemv_quant_batch_kernel(const GemvBatchArgs a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= a.n_rows) return;
  const int j = blockIdx.y;
  const int64_t n_blocks = a.n_cols / T::kElems;
  gemv_quant_row<T>(static_cast<const uint8_t*>(a.w[j]), a.row_stride, a.n_rows, n_blocks,
                    static_cast<const typename T::Act*>(a.act) + a.row0[j] * n_blocks,
                    a.n_tokens[j], a.y + a.row0[j] * a.n_rows, row);
}

template <class T>
__device__ void gemv_float_row(const uint8_t* w, int64_t row_stride, int64_t n_rows, int64_t n_cols,
                               const float* x, int n_tokens, float* y, int64_t row) {
  const int lane = threadIdx.x & 31;
  const auto* wr = reinterpret_cast<const typename T::Block*>(w + row * row_stride);
  float acc[kMaxGemvTokens] = {};
  for (int64_t j = lane; j < n_cols; j += 32) {
    const float wv = T::value(wr[j], 0);
#pragma unroll
    for (int t = 0; t < kMaxGemvTokens; ++t) {
      if (t >= n_tokens) break;
      acc[t] += wv * T::round_act(x[t * n_cols + j]);
    }
  }
#pragma unroll
  for (int t = 0; t < kMaxGemvTokens; ++t) {
    if (t >= n_tokens) break;
    const float s = warp_sum(acc[t]);
    if (lane == 0) y[t * n_rows + row] = s;
  }
}

template <class T>
__global__ void gemv_float_kernel(const uint8_t* w, int64_t row_stride, int64_t n_rows,
                                  int64_t n_cols, const float* x, int n_tokens, float* y) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= n_rows) return;
  gemv_float_row<T>(w, row_stride, n_rows, n_cols, x, n_tokens, y, row);
}

template <class T>
__global__ void gemv_float_batch_kernel(const GemvBatchArgs a) {
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarpsPerBlock + (threadIdx.x >> 5);
  if (row >= a.n_rows) return;
  const int j = blockIdx.y;
  gemv_float_row<T>(static_cast<const uint8_t*>(a.w[j]), a.row_stride, a.n_rows, a.n_cols,
                    static_cast<const float*>(a.act) + a.row0[j] * a.n_cols, a.n_tokens[j],
                    a.y + a.row0[j] * a.n_rows, row);
}

template <class T>
void gemv_quant(const GemvArgs& a, cudaStream_t stream) {
  const int64_t n_blocks = a.n_cols / T::kElems;
  gemv_quant_kernel<T><<<grid_size(a.n_rows, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(
      static_cast<const uint8_t*>(a.w), a.row_stride, a.n_rows, n_blocks,
      static_cast<const typename T::Act*>(a.act), static_cast<int>(a.n_tokens), a.y);
  CUDA_CHECK_LAUNCH("gemv_quant");
}

template <class T>
void gemv_float(const GemvArgs& a, cudaStream_t stream) {
  gemv_float_kernel<T><<<grid_size(a.n_rows, kWarpsPerBlock), 32 * kWarpsPerBlock, 0, stream>>>(
      static_cast<const uint8_t*>(a.w), a.row_stride, a.n_rows, a.n_cols,
      static_cast<const float*>(a.act), static_cast<int>(a.n_tokens), a.y);
  CUDA_CHECK_LAUNCH("gemv_float");
}

template <class T>
void gemv_quant_batch(const GemvBatchArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(grid_size(a.n_rows, kWarpsPerBlock)),
                  static_cast<unsigned>(a.n_matrices));
  gemv_quant_batch_kernel<T><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("gemv_quant_batch");
}

template <class T>
void gemv_float_batch(const GemvBatchArgs& a, cudaStream_t stream) {
  const dim3 grid(static_cast<unsigned>(grid_size(a.n_rows, kWarpsPerBlock)),
                  static_cast<unsigned>(a.n_matrices));
  gemv_float_batch_kernel<T><<<grid, 32 * kWarpsPerBlock, 0, stream>>>(a);
  CUDA_CHECK_LAUNCH("gemv_float_batch");
}

// Calls on_float or on_quant with the traits of `type` (an empty tag object; the one type
// table of gpu/kernel_math.h), so each launcher instantiates one kernel per type.
template <class OnFloat, class OnQuant>
void dispatch_gemv(GgmlType type, const char* what, OnFloat&& on_float, OnQuant&& on_quant) {
#define TANDEM_GEMV_FLOAT_CASE(name, traits) \
  case GgmlType::name:                       \
    return on_float(traits{});
#define TANDEM_GEMV_QUANT_CASE(name, traits) \
  case GgmlType::name:                       \
    return on_quant(traits{});
  switch (type) {
    TANDEM_KMATH_FLOAT_TYPES(TANDEM_GEMV_FLOAT_CASE)
    TANDEM_KMATH_QUANT_TYPES(TANDEM_GEMV_QUANT_CASE)
    default:
      break;
  }
#undef TANDEM_GEMV_FLOAT_CASE
#undef TANDEM_GEMV_QUANT_CASE
  throw AcceleratorError(std::string(what) + ": unsupported weight type " +
                         std::string(type_name(type)));
}

}  // namespace

void launch_quantize_activations(GgmlType act_type, const float* x, int64_t n_tokens,
                                 int64_t n_cols, void* out, bool as_floats, cudaStream_t stream) {
  const int64_t n = n_tokens * n_cols;
  constexpr int kThreads = 256;  // 8 warps, one block of activations each
  switch (act_type) {
    case GgmlType::Q8_0:
      quantize_q8_32_kernel<false>
          <<<grid_size(n / kQK, 8), kThreads, 0, stream>>>(x, n / kQK, out, as_floats);
      break;
    case GgmlType::Q8_1:
      quantize_q8_32_kernel<true>
          <<<grid_size(n / kQK, 8), kThreads, 0, stream>>>(x, n / kQK, out, as_floats);
      break;
    case GgmlType::Q8_K:
      quantize_q8_k_kernel<<<grid_size(n / kQKK, 8), kThreads, 0, stream>>>(x, n / kQKK, out,
                                                                            as_floats);
      break;
    default:
      throw AcceleratorError("CUDA quantize_activations: " + std::string(type_name(act_type)) +
                             " is not an activation type");
  }
  CUDA_CHECK_LAUNCH("quantize_activations");
}

void launch_gemv(const GemvArgs& args, cudaStream_t stream) {
  if (args.n_tokens < 1 || args.n_tokens > kMaxGemvTokens) {
    throw AcceleratorError("CUDA gemv: " + std::to_string(args.n_tokens) + " tokens outside 1.." +
                           std::to_string(kMaxGemvTokens));
  }
  dispatch_gemv(
      args.type, "CUDA gemv", [&](auto traits) { gemv_float<decltype(traits)>(args, stream); },
      [&](auto traits) { gemv_quant<decltype(traits)>(args, stream); });
}

void launch_gemv_batch(const GemvBatchArgs& args, cudaStream_t stream) {
  if (args.n_matrices < 1 || args.n_matrices > kMaxGemvBatch) {
    throw AcceleratorError("CUDA gemv batch: " + std::to_string(args.n_matrices) +
                           " matrices outside 1.." + std::to_string(kMaxGemvBatch));
  }
  for (int j = 0; j < args.n_matrices; ++j) {
    if (args.n_tokens[j] < 1 || args.n_tokens[j] > kMaxGemvTokens) {
      throw AcceleratorError("CUDA gemv batch: " + std::to_string(args.n_tokens[j]) +
                             " tokens outside 1.." + std::to_string(kMaxGemvTokens));
    }
  }
  dispatch_gemv(
      args.type, "CUDA gemv batch",
      [&](auto traits) { gemv_float_batch<decltype(traits)>(args, stream); },
      [&](auto traits) { gemv_quant_batch<decltype(traits)>(args, stream); });
}

}  // namespace tandem::cuda
