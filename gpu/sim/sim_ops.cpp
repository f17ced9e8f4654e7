// The compute-stream ops of SimAccelerator: argument checks on the calling thread (so a bad
// call fails where it is made), then the CPU kernels on the compute stream's worker.
#include <string>

#include "cpu/ops.h"
#include "gpu/sim/sim_accelerator.h"
#include "gpu/sim/sim_kernels.h"

namespace tandem {
namespace {

std::string str(int64_t v) {
  return std::to_string(v);
}

void require(bool ok, const char* op, const std::string& what) {
  if (!ok) throw AcceleratorError(std::string("sim ") + op + ": " + what);
}

std::string shape(const MatrixRef& m) {
  return std::string(type_name(m.type)) + " " + str(m.n_rows) + "x" + str(m.n_cols);
}

}  // namespace

MatrixRef SimAccelerator::matrix(const DeviceMatrix& m, const char* op, const char* arg) const {
  const TypeTraits& t = traits(m.type);
  const std::string name = std::string(arg) + " (" + std::string(t.name) + ")";
  require(t.supported, op, name + ": type not supported");
  require(m.n_rows > 0 && m.n_cols > 0, op,
          name + ": empty matrix " + str(m.n_rows) + "x" + str(m.n_cols));
  require(m.n_cols % t.block_elems == 0, op,
          name + ": row length " + str(m.n_cols) + " is not a multiple of the block size " +
              str(t.block_elems));
  const int64_t rb = row_bytes(m.type, m.n_cols);
  require(m.row_stride >= rb, op,
          name + ": row stride " + str(m.row_stride) + " < row size " + str(rb));
  const uint64_t span = static_cast<uint64_t>((m.n_rows - 1) * m.row_stride + rb);
  return MatrixRef{m.type, at(m.buf, m.offset, span, op, arg), m.n_rows, m.n_cols, m.row_stride};
}

void SimAccelerator::matmul(const DeviceMatrix& w, DeviceBuffer x, int64_t n_tokens,
                            DeviceBuffer y) {
  require(n_tokens >= 1, "matmul", "n_tokens " + str(n_tokens) + " < 1");
  const MatrixRef m = matrix(w, "matmul", "w");
  const float* px = floats(x, n_tokens * m.n_cols, "matmul", "x");
  float* py = floats(y, n_tokens * m.n_rows, "matmul", "y");
  launch(Stream::Compute, "matmul " + shape(m) + " x" + str(n_tokens),
         cost_.matmul_us(m.type, m.n_rows, m.n_cols, n_tokens),
         {{"type", std::string(type_name(m.type))},
          {"rows", str(m.n_rows)},
          {"cols", str(m.n_cols)},
          {"tokens", str(n_tokens)}},
         [m, px, py, n_tokens] { tandem::matmul(m, px, n_tokens, py, nullptr); });
}

void SimAccelerator::expert_ffn_batch(const DeviceExpert* experts, const int64_t* n_tokens,
                                      size_t n_experts, DeviceBuffer x, DeviceBuffer scratch,
                                      DeviceBuffer out) {
  const char* op = n_experts == 1 ? "expert_ffn" : "expert_ffn_batch";
  require(n_experts > 0 && experts && n_tokens, op, "no experts");
  int64_t total = 0;
  for (size_t j = 0; j < n_experts; ++j) {
    require(n_tokens[j] >= 1, op, "n_tokens " + str(n_tokens[j]) + " < 1");
    total += n_tokens[j];
  }
  const MatrixRef gate0 = matrix(experts[0].gate, op, "gate");
  const float* px = floats(x, total * gate0.n_cols, op, "x");
  float* ps = floats(scratch, 2 * total * gate0.n_rows, op, "scratch");
  float* po = floats(out, total * gate0.n_cols, op, "out");
  int64_t row0 = 0;
  for (size_t j = 0; j < n_experts; ++j) {
    const DeviceExpert& e = experts[j];
    const MatrixRef gate = matrix(e.gate, op, "gate"), up = matrix(e.up, op, "up"),
                    down = matrix(e.down, op, "down");
    require(gate.type == gate0.type && gate.n_rows == gate0.n_rows && gate.n_cols == gate0.n_cols,
            op, "gate " + shape(gate) + " differs from the first expert's " + shape(gate0));
    require(up.n_rows == gate.n_rows && up.n_cols == gate.n_cols, op,
            "up " + shape(up) + " does not match gate " + shape(gate));
    require(down.n_cols == gate.n_rows && down.n_rows == gate.n_cols, op,
            "down " + shape(down) + " does not fit gate " + shape(gate));
    const int64_t m = n_tokens[j];
    // Three GEMMs and the SiLU-gate kernel per expert: the clock the scheduler's cost model
    // describes.
    const double dur = cost_.matmul_us(gate.type, gate.n_rows, gate.n_cols, m) +
                       cost_.matmul_us(up.type, up.n_rows, up.n_cols, m) +
                       cost_.matmul_us(down.type, down.n_rows, down.n_cols, m) +
                       cost_.elementwise_us(12.0 * static_cast<double>(m * gate.n_rows));
    const float* xj = px + row0 * gate.n_cols;
    float* sj = ps + 2 * row0 * gate.n_rows;
    float* oj = po + row0 * gate.n_cols;
    launch(Stream::Compute, "expert_ffn " + shape(gate) + " x" + str(m), dur,
           {{"type", std::string(type_name(gate.type))},
            {"n_ff", str(gate.n_rows)},
            {"n_embd", str(gate.n_cols)},
            {"tokens", str(m)}},
           [=] { sim_expert_ffn(gate, up, down, xj, m, sj, oj); });
    row0 += m;
  }
}

void SimAccelerator::rms_norm(DeviceBuffer x, DeviceBuffer w, int64_t n_tokens, int64_t n,
                              float eps, DeviceBuffer y) {
  require(n_tokens >= 1 && n >= 1, "rms_norm", "empty input " + str(n_tokens) + "x" + str(n));
  const float* px = floats(x, n_tokens * n, "rms_norm", "x");
  const float* pw = w ? floats(w, n, "rms_norm", "w") : nullptr;
  float* py = floats(y, n_tokens * n, "rms_norm", "y");
  launch(Stream::Compute, "rms_norm " + str(n_tokens) + "x" + str(n),
         cost_.elementwise_us(8.0 * static_cast<double>(n_tokens * n)), {{"tokens", str(n_tokens)}},
         [=] {
           for (int64_t t = 0; t < n_tokens; ++t)
             tandem::rms_norm(px + t * n, pw, n, eps, py + t * n);
         });
}

void SimAccelerator::rope(DeviceBuffer x, DeviceBuffer positions, int64_t n_tokens, int64_t n_heads,
                          int64_t head_dim, int64_t n_rot, float freq_base, float freq_scale,
                          bool neox) {
  require(n_tokens >= 1 && n_heads >= 1, "rope", "empty input");
  require(n_rot >= 0 && n_rot <= head_dim && n_rot % 2 == 0, "rope",
          "n_rot " + str(n_rot) + " must be even and at most head_dim " + str(head_dim));
  float* px = floats(x, n_tokens * n_heads * head_dim, "rope", "x");
  const auto* pos =
      reinterpret_cast<const int32_t*>(floats(positions, n_tokens, "rope", "positions"));
  launch(Stream::Compute, "rope " + str(n_tokens) + "x" + str(n_heads) + "x" + str(head_dim),
         cost_.elementwise_us(8.0 * static_cast<double>(n_tokens * n_heads * head_dim)),
         {{"tokens", str(n_tokens)}}, [=] {
           for (int64_t t = 0; t < n_tokens; ++t) {
             for (int64_t h = 0; h < n_heads; ++h) {
               tandem::rope(px + (t * n_heads + h) * head_dim, n_rot, pos[t], freq_base, freq_scale,
                            neox);
             }
           }
         });
}

void SimAccelerator::router_topk(DeviceBuffer logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                                 bool renormalize, DeviceBuffer ids, DeviceBuffer weights) {
  const char* op = "router_topk";
  require(n_tokens >= 1, op, "n_tokens " + str(n_tokens) + " < 1");
  require(k >= 1 && k <= n_expert, op, "k " + str(k) + " outside 1.." + str(n_expert));
  const float* pl = floats(logits, n_tokens * n_expert, op, "logits");
  auto* pi = reinterpret_cast<int32_t*>(floats(ids, n_tokens * k, op, "ids"));
  float* pw = floats(weights, n_tokens * k, op, "weights");
  launch(Stream::Compute, "router_topk " + str(n_tokens) + "x" + str(n_expert) + " k" + str(k),
         cost_.elementwise_us(4.0 * static_cast<double>(n_tokens * (n_expert + 2 * k))),
         {{"tokens", str(n_tokens)}},
         [=] { sim_router_topk(pl, n_tokens, n_expert, k, renormalize, pi, pw); });
}

void SimAccelerator::scatter_add_weighted(DeviceBuffer y, DeviceBuffer index, DeviceBuffer weight,
                                          int64_t n_rows, int64_t width, DeviceBuffer out) {
  const char* op = "scatter_add_weighted";
  require(n_rows >= 0 && width >= 1, op, "bad shape " + str(n_rows) + "x" + str(width));
  if (n_rows == 0) return;  // an expert group with no tokens: nothing to add
  const float* py = floats(y, n_rows * width, op, "y");
  const auto* pi = reinterpret_cast<const int32_t*>(floats(index, n_rows, op, "index"));
  const float* pw = floats(weight, n_rows, op, "weight");
  const int64_t n_out = static_cast<int64_t>(out.bytes / (sizeof(float) * width));
  float* po = floats(out, n_out * width, op, "out");
  launch(Stream::Compute, "scatter_add " + str(n_rows) + "x" + str(width),
         cost_.elementwise_us(12.0 * static_cast<double>(n_rows * width)), {{"rows", str(n_rows)}},
         [=] { sim_scatter_add_weighted(py, pi, pw, n_rows, width, po, n_out); });
}

void SimAccelerator::attention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer k_cache,
                               DeviceBuffer v_cache, int64_t pos0, int64_t n_tokens, int64_t n_head,
                               int64_t n_head_kv, int64_t head_dim, DeviceBuffer out) {
  const char* op = "attention";
  require(n_tokens >= 1 && pos0 >= 0, op, "n_tokens " + str(n_tokens) + ", pos0 " + str(pos0));
  require(n_head >= 1 && n_head_kv >= 1 && n_head % n_head_kv == 0 && head_dim >= 1, op,
          "n_head " + str(n_head) + " is not a multiple of n_head_kv " + str(n_head_kv));
  const int64_t q_dim = n_head * head_dim, kv_dim = n_head_kv * head_dim;
  const int64_t n_ctx = static_cast<int64_t>(k_cache.bytes / (sizeof(float) * kv_dim));
  require(pos0 + n_tokens <= n_ctx, op,
          "positions up to " + str(pos0 + n_tokens) + " exceed the cache's " + str(n_ctx));
  const float* pq = floats(q, n_tokens * q_dim, op, "q");
  const float* pk = floats(k, n_tokens * kv_dim, op, "k");
  const float* pv = floats(v, n_tokens * kv_dim, op, "v");
  float* pkc = floats(k_cache, n_ctx * kv_dim, op, "k_cache");
  float* pvc = floats(v_cache, n_ctx * kv_dim, op, "v_cache");
  float* po = floats(out, n_tokens * q_dim, op, "out");
  launch(Stream::Compute, "attention " + str(n_tokens) + " tok @" + str(pos0),
         cost_.attention_us(n_tokens, pos0 + n_tokens, n_head, n_head_kv, head_dim),
         {{"tokens", str(n_tokens)}, {"pos0", str(pos0)}}, [=] {
           sim_attention(pq, pk, pv, pkc, pvc, pos0, n_tokens, n_head, n_head_kv, head_dim, po);
         });
}

void SimAccelerator::embedding(const DeviceMatrix& table, DeviceBuffer ids, int64_t n_tokens,
                               DeviceBuffer y) {
  require(n_tokens >= 1, "embedding", "n_tokens " + str(n_tokens) + " < 1");
  const MatrixRef m = matrix(table, "embedding", "table");
  const auto* pi = reinterpret_cast<const int32_t*>(floats(ids, n_tokens, "embedding", "ids"));
  float* py = floats(y, n_tokens * m.n_cols, "embedding", "y");
  launch(Stream::Compute, "embedding x" + str(n_tokens),
         cost_.elementwise_us(
             static_cast<double>(n_tokens * (row_bytes(m.type, m.n_cols) + 4 * m.n_cols))),
         {{"tokens", str(n_tokens)}}, [=] { sim_embedding(m, pi, n_tokens, py); });
}

}  // namespace tandem
