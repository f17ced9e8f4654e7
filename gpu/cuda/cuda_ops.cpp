// The compute-stream ops of CudaAcceleratorImpl: arguments are checked on the calling thread
// (a bad call fails where it is made, with the same rules as the sim accelerator), then the
// kernels of gpu/cuda/*.cu are queued on the compute stream.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu/quant.h"
#include "gpu/cuda/attention.cuh"
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/cuda_accelerator_impl.h"
#include "gpu/cuda/elementwise.cuh"
#include "gpu/cuda/gemm.cuh"
#include "gpu/cuda/norm.cuh"
#include "gpu/cuda/quant_gemv.cuh"
#include "gpu/cuda/rope.cuh"
#include "gpu/cuda/router.cuh"
#include "gpu/cuda/scatter.cuh"
#include "gpu/kernel_math.h"

namespace tandem::cuda {
namespace {

// The GEMM path dequantizes at most this many bytes of weights (as f32) at a time.
constexpr int64_t kGemmWeightChunkBytes = int64_t{64} << 20;
// Grid dimension y limit: tokens per attention launch.
constexpr int64_t kMaxGridY = 65535;

std::string str(int64_t v) {
  return std::to_string(v);
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw AcceleratorError(std::string("CUDA ") + op + ": " + what);
}

std::string shape(const RowSource& m) {
  return std::string(type_name(m.type)) + " " + str(m.n_rows) + "x" + str(m.n_cols);
}

// Alignment the kernels' loads of one block (or element) need.
int64_t block_alignment(GgmlType type) {
  switch (type) {
    case GgmlType::F32:
      return 4;
    case GgmlType::MXFP4:
      return 1;
    default:
      return 2;  // f16 scales (or f16/bf16 elements)
  }
}

// Whether activations of vec_dot type `act` are quantized blocks (every quantized weight type;
// Q8_0 weights take Q8_0 activations, so comparing act with the weight type would not do).
bool takes_integer_activations(GgmlType act) {
  return act == GgmlType::Q8_0 || act == GgmlType::Q8_1 || act == GgmlType::Q8_K;
}

}  // namespace

RowSource CudaAcceleratorImpl::matrix(const DeviceMatrix& m, const char* op,
                                      const char* arg) const {
  const TypeTraits& t = traits(m.type);
  const std::string name = std::string(arg) + " (" + std::string(t.name) + ")";
  require(t.supported && m.type != GgmlType::Q8_1 && m.type != GgmlType::Q8_K, op,
          name + ": type not supported");
  require(m.n_rows > 0 && m.n_cols > 0, op,
          name + ": empty matrix " + str(m.n_rows) + "x" + str(m.n_cols));
  require(m.n_cols % t.block_elems == 0, op,
          name + ": row length " + str(m.n_cols) + " is not a multiple of the block size " +
              str(t.block_elems));
  const int64_t rb = row_bytes(m.type, m.n_cols);
  require(m.row_stride >= rb, op,
          name + ": row stride " + str(m.row_stride) + " < row size " + str(rb));
  const int64_t align = block_alignment(m.type);
  require(m.offset % align == 0 && m.row_stride % align == 0, op,
          name + ": offset " + str(static_cast<int64_t>(m.offset)) + " and row stride " +
              str(m.row_stride) + " must be multiples of " + str(align) + " bytes");
  const uint64_t span = static_cast<uint64_t>((m.n_rows - 1) * m.row_stride + rb);
  return RowSource{m.type, at(m.buf, m.offset, span, op, arg), m.row_stride, m.n_rows, m.n_cols};
}

// y[t][r] = dot(row r of w, x[t]) with the CPU's activation rounding. Few tokens: the fused
// GEMV from quantized weights. More: activations rounded once, weight chunks dequantized to
// f32 into the workspace, cuBLAS f32 GEMM per chunk.
void CudaAcceleratorImpl::matmul_locked(const RowSource& w, const float* x, int64_t n_tokens,
                                        float* y) {
  const GgmlType act = vec_dot_type(w.type);
  const bool quantized = takes_integer_activations(act);
  if (n_tokens <= kMaxGemvTokens) {
    const void* a = x;
    if (quantized) {
      void* q = workspace(static_cast<uint64_t>(n_tokens * row_bytes(act, w.n_cols)));
      launch_quantize_activations(act, x, n_tokens, w.n_cols, q, false, compute_);
      a = q;
    }
    launch_gemv(GemvArgs{w.type, w.base, w.row_stride, w.n_rows, w.n_cols, a, n_tokens, y},
                compute_);
    return;
  }
  const bool direct_f32 = w.type == GgmlType::F32 && w.row_stride % 4 == 0;
  const int64_t n_x = n_tokens * w.n_cols;
  const int64_t chunk_rows =
      direct_f32 ? w.n_rows
                 : std::clamp<int64_t>(kGemmWeightChunkBytes / (w.n_cols * 4), 1, w.n_rows);
  const int64_t ws_floats =
      (w.type == GgmlType::F32 ? 0 : n_x) + (direct_f32 ? 0 : chunk_rows * w.n_cols);
  auto* ws = static_cast<float*>(workspace(static_cast<uint64_t>(ws_floats) * sizeof(float)));
  const float* xr = x;
  if (w.type == GgmlType::F16 || w.type == GgmlType::BF16) {
    launch_round_floats(w.type, x, n_x, ws, compute_);
    xr = ws;
  } else if (quantized) {
    launch_quantize_activations(act, x, n_tokens, w.n_cols, ws, true, compute_);
    xr = ws;
  }
  if (direct_f32) {
    gemm_f32(cublas_, static_cast<const float*>(w.base), w.row_stride / 4, w.n_rows, w.n_cols, xr,
             n_tokens, y, w.n_rows);
    return;
  }
  float* wf = ws + (w.type == GgmlType::F32 ? 0 : n_x);
  for (int64_t r0 = 0; r0 < w.n_rows; r0 += chunk_rows) {
    const int64_t m = std::min(chunk_rows, w.n_rows - r0);
    launch_dequantize_rows(w, r0, m, wf, compute_);
    gemm_f32(cublas_, wf, w.n_cols, m, w.n_cols, xr, n_tokens, y + r0, w.n_rows);
  }
}

void CudaAcceleratorImpl::matmul(const DeviceMatrix& w, DeviceBuffer x, int64_t n_tokens,
                                 DeviceBuffer y) {
  require(n_tokens >= 1, "matmul", "n_tokens " + str(n_tokens) + " < 1");
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const RowSource m = matrix(w, "matmul", "w");
  const float* px = floats(x, n_tokens * m.n_cols, "matmul", "x");
  float* py = floats(y, n_tokens * m.n_rows, "matmul", "y");
  matmul_locked(m, px, n_tokens, py);
}

// Each expert's rows through gate, up, SiLU and down. When every expert has few enough tokens
// for the GEMV, each stage runs as one launch over all experts (activations quantized once for
// gate and up): a decode step's experts cost five launches rather than eight per expert.
void CudaAcceleratorImpl::expert_ffn_batch(const DeviceExpert* experts, const int64_t* n_tokens,
                                           size_t n_experts, DeviceBuffer x, DeviceBuffer scratch,
                                           DeviceBuffer out) {
  const char* op = n_experts == 1 ? "expert_ffn" : "expert_ffn_batch";
  require(n_experts > 0 && experts && n_tokens, op, "no experts");
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  std::vector<RowSource> gate, up, down;
  int64_t total = 0;
  bool gemv = true;
  for (size_t j = 0; j < n_experts; ++j) {
    require(n_tokens[j] >= 1, op, "n_tokens " + str(n_tokens[j]) + " < 1");
    gate.push_back(matrix(experts[j].gate, op, "gate"));
    up.push_back(matrix(experts[j].up, op, "up"));
    down.push_back(matrix(experts[j].down, op, "down"));
    const RowSource &g = gate.back(), &u = up.back(), &d = down.back();
    require(g.type == gate[0].type && u.type == up[0].type && d.type == down[0].type &&
                g.n_rows == gate[0].n_rows && g.n_cols == gate[0].n_cols &&
                g.row_stride == gate[0].row_stride && u.row_stride == up[0].row_stride &&
                d.row_stride == down[0].row_stride,
            op, "gate " + shape(g) + " differs from the first expert's " + shape(gate[0]));
    require(u.n_rows == g.n_rows && u.n_cols == g.n_cols, op,
            "up " + shape(u) + " does not match gate " + shape(g));
    require(d.n_cols == g.n_rows && d.n_rows == g.n_cols, op,
            "down " + shape(d) + " does not fit gate " + shape(g));
    total += n_tokens[j];
    gemv = gemv && n_tokens[j] <= kMaxGemvTokens;
  }
  const int64_t n_embd = gate[0].n_cols, n_ff = gate[0].n_rows;
  const float* px = floats(x, total * n_embd, op, "x");
  float* ps = floats(scratch, 2 * total * n_ff, op, "scratch");
  float* po = floats(out, total * n_embd, op, "out");
  if (!gemv || n_experts == 1) {
    int64_t row0 = 0;
    for (size_t j = 0; j < n_experts; ++j) {
      const int64_t m = n_tokens[j];
      float* g = ps + 2 * row0 * n_ff;
      float* u = g + m * n_ff;
      matmul_locked(gate[j], px + row0 * n_embd, m, g);
      matmul_locked(up[j], px + row0 * n_embd, m, u);
      launch_silu_mul(g, u, m * n_ff, compute_);
      matmul_locked(down[j], g, m, po + row0 * n_embd);
      row0 += m;
    }
    return;
  }
  float* g = ps;
  float* u = ps + total * n_ff;
  // The GEMV's activations: rounded as the CPU rounds them for weights of `type`.
  const auto activations = [&](GgmlType type, const float* in, int64_t n_cols) -> const void* {
    const GgmlType act = vec_dot_type(type);
    if (!takes_integer_activations(act)) return in;
    void* q = workspace(static_cast<uint64_t>(total * row_bytes(act, n_cols)));
    launch_quantize_activations(act, in, total, n_cols, q, false, compute_);
    return q;
  };
  const auto stage = [&](const std::vector<RowSource>& w, const void* a, float* y) {
    int64_t row0 = 0;  // the first row of expert j0
    for (size_t j0 = 0; j0 < w.size(); j0 += kMaxGemvBatch) {
      GemvBatchArgs b{};
      b.type = w[0].type;
      b.row_stride = w[0].row_stride;
      b.n_rows = w[0].n_rows;
      b.n_cols = w[0].n_cols;
      b.act = a;
      b.y = y;
      b.n_matrices = static_cast<int>(std::min<size_t>(kMaxGemvBatch, w.size() - j0));
      for (int k = 0; k < b.n_matrices; ++k) {
        b.w[k] = w[j0 + k].base;
        b.row0[k] = static_cast<int32_t>(row0);
        b.n_tokens[k] = static_cast<int32_t>(n_tokens[j0 + k]);
        row0 += n_tokens[j0 + k];
      }
      launch_gemv_batch(b, compute_);
    }
  };
  const void* a = activations(gate[0].type, px, n_embd);
  stage(gate, a, g);
  // Gate and up share their activations when they share a type (the workspace holds one set).
  stage(up, up[0].type == gate[0].type ? a : activations(up[0].type, px, n_embd), u);
  launch_silu_mul(g, u, total * n_ff, compute_);
  stage(down, activations(down[0].type, g, n_ff), po);
}

void CudaAcceleratorImpl::rms_norm(DeviceBuffer x, DeviceBuffer w, int64_t n_tokens, int64_t n,
                                   float eps, DeviceBuffer y) {
  require(n_tokens >= 1 && n >= 1, "rms_norm", "empty input " + str(n_tokens) + "x" + str(n));
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const float* px = floats(x, n_tokens * n, "rms_norm", "x");
  const float* pw = w ? floats(w, n, "rms_norm", "w") : nullptr;
  float* py = floats(y, n_tokens * n, "rms_norm", "y");
  launch_rms_norm(px, pw, n_tokens, n, eps, py, compute_);
}

void CudaAcceleratorImpl::rope(DeviceBuffer x, DeviceBuffer positions, int64_t n_tokens,
                               int64_t n_heads, int64_t head_dim, int64_t n_rot, float freq_base,
                               float freq_scale, bool neox) {
  require(n_tokens >= 1 && n_heads >= 1, "rope", "empty input");
  require(n_rot >= 0 && n_rot <= head_dim && n_rot % 2 == 0, "rope",
          "n_rot " + str(n_rot) + " must be even and at most head_dim " + str(head_dim));
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  float* px = floats(x, n_tokens * n_heads * head_dim, "rope", "x");
  const int32_t* pos = ints(positions, n_tokens, "rope", "positions");
  if (n_rot == 0) return;
  launch_rope(RopeArgs{px, pos, n_tokens, n_heads, head_dim, n_rot,
                       kmath::rope_theta_scale(freq_base, n_rot), freq_scale, neox},
              compute_);
}

void CudaAcceleratorImpl::router_topk(DeviceBuffer logits, int64_t n_tokens, int64_t n_expert,
                                      int64_t k, bool renormalize, DeviceBuffer ids,
                                      DeviceBuffer weights) {
  const char* op = "router_topk";
  require(n_tokens >= 1, op, "n_tokens " + str(n_tokens) + " < 1");
  require(k >= 1 && k <= n_expert, op, "k " + str(k) + " outside 1.." + str(n_expert));
  require(n_expert <= kMaxRouterExperts, op,
          str(n_expert) + " experts exceed the kernel's " + str(kMaxRouterExperts));
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const float* pl = floats(logits, n_tokens * n_expert, op, "logits");
  int32_t* pi = ints(ids, n_tokens * k, op, "ids");
  float* pw = floats(weights, n_tokens * k, op, "weights");
  launch_router_topk(pl, n_tokens, n_expert, k, renormalize, pi, pw, compute_);
}

void CudaAcceleratorImpl::scatter_add_weighted(DeviceBuffer y, DeviceBuffer index,
                                               DeviceBuffer weight, int64_t n_rows, int64_t width,
                                               DeviceBuffer out) {
  const char* op = "scatter_add_weighted";
  require(n_rows >= 0 && width >= 1, op, "bad shape " + str(n_rows) + "x" + str(width));
  if (n_rows == 0) return;  // an expert group with no tokens: nothing to add
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const float* py = floats(y, n_rows * width, op, "y");
  const int32_t* pi = ints(index, n_rows, op, "index");
  const float* pw = floats(weight, n_rows, op, "weight");
  const int64_t n_out = static_cast<int64_t>(out.bytes / (sizeof(float) * width));
  float* po = floats(out, n_out * width, op, "out");
  error_word_pending_ = true;
  launch_scatter_add_weighted(py, pi, pw, n_rows, width, po, n_out, error_word_, compute_);
}

void CudaAcceleratorImpl::attention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v,
                                    DeviceBuffer k_cache, DeviceBuffer v_cache, int64_t pos0,
                                    int64_t n_tokens, int64_t n_head, int64_t n_head_kv,
                                    int64_t head_dim, DeviceBuffer out) {
  const char* op = "attention";
  require(n_tokens >= 1 && pos0 >= 0, op, "n_tokens " + str(n_tokens) + ", pos0 " + str(pos0));
  require(n_head >= 1 && n_head_kv >= 1 && n_head % n_head_kv == 0 && head_dim >= 1, op,
          "n_head " + str(n_head) + " is not a multiple of n_head_kv " + str(n_head_kv));
  require(head_dim <= kMaxHeadDim, op,
          "head_dim " + str(head_dim) + " exceeds " + str(kMaxHeadDim));
  const int64_t q_dim = n_head * head_dim, kv_dim = n_head_kv * head_dim;
  const int64_t n_ctx = static_cast<int64_t>(k_cache.bytes / (sizeof(float) * kv_dim));
  require(pos0 + n_tokens <= n_ctx, op,
          "positions up to " + str(pos0 + n_tokens) + " exceed the cache's " + str(n_ctx));
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const float* pq = floats(q, n_tokens * q_dim, op, "q");
  const float* pk = floats(k, n_tokens * kv_dim, op, "k");
  const float* pv = floats(v, n_tokens * kv_dim, op, "v");
  float* pkc = floats(k_cache, n_ctx * kv_dim, op, "k_cache");
  float* pvc = floats(v_cache, n_ctx * kv_dim, op, "v_cache");
  float* po = floats(out, n_tokens * q_dim, op, "out");
  const size_t kv_bytes = static_cast<size_t>(n_tokens * kv_dim) * sizeof(float);
  CUDA_CHECK(
      cudaMemcpyAsync(pkc + pos0 * kv_dim, pk, kv_bytes, cudaMemcpyDeviceToDevice, compute_));
  CUDA_CHECK(
      cudaMemcpyAsync(pvc + pos0 * kv_dim, pv, kv_bytes, cudaMemcpyDeviceToDevice, compute_));
  const float scale = 1.0f / std::sqrt(static_cast<float>(head_dim));
  for (int64_t t0 = 0; t0 < n_tokens; t0 += kMaxGridY) {
    const int64_t n = std::min(kMaxGridY, n_tokens - t0);
    launch_attention(AttentionArgs{pq + t0 * q_dim, pkc, pvc, pos0 + t0, n, n_head, n_head_kv,
                                   head_dim, scale, po + t0 * q_dim},
                     compute_);
  }
}

void CudaAcceleratorImpl::embedding(const DeviceMatrix& table, DeviceBuffer ids, int64_t n_tokens,
                                    DeviceBuffer y) {
  require(n_tokens >= 1, "embedding", "n_tokens " + str(n_tokens) + " < 1");
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const RowSource m = matrix(table, "embedding", "table");
  const int32_t* pi = ints(ids, n_tokens, "embedding", "ids");
  float* py = floats(y, n_tokens * m.n_cols, "embedding", "y");
  error_word_pending_ = true;
  launch_embedding(m, pi, n_tokens, py, error_word_, compute_);
}

}  // namespace tandem::cuda
