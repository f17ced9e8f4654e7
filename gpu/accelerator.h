// The device interface the engine and scheduler use. Implemented by gpu/cuda (CUDA + cuBLAS)
// and gpu/sim (host threads with a modelled clock). No CUDA type appears here.
//
// Model: device memory is handed out as opaque buffers under a byte budget. Work is queued on
// two in-order streams, Compute and Copy; events order one stream after the other. Every op is
// asynchronous: it returns once queued. Activations in device buffers are f32, row-major
// [n_tokens][width]; weights keep their GGUF (quantized) format.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>

#include "cpu/quant_types.h"

namespace tandem {

class AcceleratorError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class Stream : int { Compute = 0, Copy = 1 };

struct DeviceBuffer {
  uint64_t handle = 0;  // 0 = none
  uint64_t bytes = 0;
  explicit operator bool() const { return handle != 0; }
};

struct Event {
  uint64_t handle = 0;
};

// A weight matrix in device memory: n_rows rows of n_cols elements of `type`, row r at byte
// offset + r * row_stride of buf (the same layout as in the GGUF file).
struct DeviceMatrix {
  GgmlType type = GgmlType::F32;
  DeviceBuffer buf;
  uint64_t offset = 0;
  int64_t n_rows = 0;
  int64_t n_cols = 0;
  int64_t row_stride = 0;
};

// The three matrices of one SiLU-gated expert: out = down(silu(gate x) * up x).
struct DeviceExpert {
  DeviceMatrix gate, up, down;
};

class Accelerator {
 public:
  virtual ~Accelerator() = default;

  virtual std::string name() const = 0;  // e.g. "sim (rtx4090-ddr5-desktop)", "cuda:0 NVIDIA H100"
  virtual uint64_t memory_budget() const = 0;  // bytes this process may allocate
  virtual uint64_t live_bytes() const = 0;     // bytes currently allocated

  // Throws AcceleratorError naming the request and the budget when it does not fit.
  virtual DeviceBuffer allocate(uint64_t bytes) = 0;
  virtual void release(DeviceBuffer buffer) = 0;

  virtual void copy_to_device(Stream stream, DeviceBuffer dst, uint64_t dst_offset, const void* src,
                              uint64_t bytes) = 0;
  virtual void copy_to_host(Stream stream, void* dst, DeviceBuffer src, uint64_t src_offset,
                            uint64_t bytes) = 0;
  // Copies a host weight matrix (host.n_rows rows of host.row_stride bytes) to dst + dst_offset
  // in the file layout the device kernels read: a matrix the CPU keeps row-interleaved
  // (cpu/interleave.h, e.g. Q4_K_X16) arrives as rows of its file type (Q4_K), through
  // upload_interleaved; any other is a plain copy_to_device. host.data is read when the copy
  // runs, as with copy_to_device.
  void upload_matrix(Stream stream, DeviceBuffer dst, uint64_t dst_offset, const MatrixRef& host);
  // Page-locks [ptr, ptr + bytes) of host memory that copies read (the model's weights, staging
  // buffers) or, with device_writes, also write (copy_to_host targets), so copies go straight
  // over DMA and return at once instead of passing through a pinned staging buffer that the
  // host fills (and waits for). Returns false where the accelerator has no such notion (the
  // sim) or the driver refuses; copies then still work.
  virtual bool register_host(const void* ptr, uint64_t bytes, bool device_writes = false) {
    (void)ptr;
    (void)bytes;
    (void)device_writes;
    return false;
  }
  // Undoes register_host (no-op for a pointer that was not registered).
  virtual void unregister_host(const void* ptr) { (void)ptr; }
  virtual Event record(Stream stream) = 0;
  // Work queued on `stream` after this call starts only once `event` has completed.
  virtual void wait(Stream stream, Event event) = 0;
  // Blocks the calling host thread until everything queued on `stream` has finished.
  virtual void synchronize(Stream stream) = 0;
  // Device time in microseconds from `start` to `end`, two events recorded on one stream that
  // have completed (e.g. after synchronize(stream)). Negative when the device cannot tell: an
  // event not complete yet or already recycled (CUDA recycles completed events once many are
  // outstanding). Lets the scheduler compare its predictions with what the device did.
  virtual double elapsed_us(Event start, Event end) = 0;

  // ---- Compute-stream ops. x, y, out: f32 activations; n_tokens >= 1. ----
  // y[t][r] = dot(row r of w, x[t]) with activations rounded to the weight's vec_dot type, as
  // the CPU matmul does.
  virtual void matmul(const DeviceMatrix& w, DeviceBuffer x, int64_t n_tokens, DeviceBuffer y) = 0;
  // out[t] = down(silu(gate x[t]) * up x[t]); scratch needs 2 * n_tokens * gate.n_rows floats.
  void expert_ffn(const DeviceExpert& expert, DeviceBuffer x, int64_t n_tokens,
                  DeviceBuffer scratch, DeviceBuffer out) {
    expert_ffn_batch(&expert, &n_tokens, 1, x, scratch, out);
  }
  // The FFNs of several experts of one layer (same shapes and types) in one call: expert j
  // reads the n_tokens[j] rows of x that follow the rows of experts 0..j-1 and writes the same
  // rows of out; scratch needs 2 * (all rows) * n_ff floats. Results equal expert_ffn on each
  // expert's rows; the CUDA backend runs a decode step's experts with one launch per stage
  // rather than one per stage and expert.
  virtual void expert_ffn_batch(const DeviceExpert* experts, const int64_t* n_tokens,
                                size_t n_experts, DeviceBuffer x, DeviceBuffer scratch,
                                DeviceBuffer out) = 0;
  // y[t] = x[t] / rms(x[t]) * w (w: n floats; may be empty for no weight).
  virtual void rms_norm(DeviceBuffer x, DeviceBuffer w, int64_t n_tokens, int64_t n, float eps,
                        DeviceBuffer y) = 0;
  // In-place RoPE over n_heads heads of head_dim per token; positions: n_tokens int32.
  virtual void rope(DeviceBuffer x, DeviceBuffer positions, int64_t n_tokens, int64_t n_heads,
                    int64_t head_dim, int64_t n_rot, float freq_base, float freq_scale,
                    bool neox) = 0;
  // Router: probs = softmax(logits[t]) over n_expert, top-k ids/weights (optionally renormalised).
  virtual void router_topk(DeviceBuffer logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                           bool renormalize, DeviceBuffer ids, DeviceBuffer weights) = 0;
  // out[t] += weight[t] * y[t] for rows gathered by index: out[index[i]] += w[i] * y[i].
  virtual void scatter_add_weighted(DeviceBuffer y, DeviceBuffer index, DeviceBuffer weight,
                                    int64_t n_rows, int64_t width, DeviceBuffer out) = 0;
  // Causal attention for tokens of one sequence at positions pos0..pos0+n_tokens-1 over a
  // device KV cache k_cache/v_cache ([n_ctx][n_head_kv*head_dim] f32), after appending k, v.
  virtual void attention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer k_cache,
                         DeviceBuffer v_cache, int64_t pos0, int64_t n_tokens, int64_t n_head,
                         int64_t n_head_kv, int64_t head_dim, DeviceBuffer out) = 0;
  // y[t] = dequantized row ids[t] of the embedding matrix.
  virtual void embedding(const DeviceMatrix& table, DeviceBuffer ids, int64_t n_tokens,
                         DeviceBuffer y) = 0;

 protected:
  // upload_matrix of a row-interleaved matrix: the file's rows are rebuilt on the way.
  virtual void upload_interleaved(Stream stream, DeviceBuffer dst, uint64_t dst_offset,
                                  const MatrixRef& host) = 0;
};

}  // namespace tandem
