// CudaAcceleratorImpl: the Accelerator interface on one CUDA device.
//
// Memory: cudaMalloc'd buffers in a handle table, under the byte budget together with the
// accelerator's workspace (activation quantization and the GEMM path's dequantized weights;
// grown on demand, never shrunk). Streams: two non-blocking cudaStream_t (compute, copy).
// Events: handles map to cudaEvent_t taken from a pool; once many are outstanding, completed
// ones but the most recent are recycled, and waiting on a recycled handle is a no-op (it had
// completed).
// Copies: cudaMemcpyAsync; host memory that is neither registered (register_host) nor
// otherwise pinned goes through a ring of pinned staging slots so the copy stays asynchronous.
// Device-side errors (a bad embedding id or scatter index) set bits in a device word that
// synchronize(Stream::Compute) reads and reports as an AcceleratorError.
// Thread safety: every public call takes one mutex; the mutex is not held while a host thread
// blocks in synchronize().
#pragma once

#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <vector>

#include "gpu/cuda/embedding.cuh"
#include "gpu/cuda_accelerator.h"

namespace tandem::cuda {

class CudaAcceleratorImpl final : public CudaAccelerator {
 public:
  CudaAcceleratorImpl(int device, uint64_t memory_budget);
  ~CudaAcceleratorImpl() override;
  CudaAcceleratorImpl(const CudaAcceleratorImpl&) = delete;
  CudaAcceleratorImpl& operator=(const CudaAcceleratorImpl&) = delete;

  std::string name() const override { return name_; }
  uint64_t memory_budget() const override { return budget_; }
  uint64_t live_bytes() const override;

  DeviceBuffer allocate(uint64_t bytes) override;
  void release(DeviceBuffer buffer) override;

  void copy_to_device(Stream stream, DeviceBuffer dst, uint64_t dst_offset, const void* src,
                      uint64_t bytes) override;
  void copy_to_host(Stream stream, void* dst, DeviceBuffer src, uint64_t src_offset,
                    uint64_t bytes) override;
  Event record(Stream stream) override;
  void wait(Stream stream, Event event) override;
  double elapsed_us(Event start, Event end) override;
  void synchronize(Stream stream) override;

  void matmul(const DeviceMatrix& w, DeviceBuffer x, int64_t n_tokens, DeviceBuffer y) override;
  void expert_ffn_batch(const DeviceExpert* experts, const int64_t* n_tokens, size_t n_experts,
                        DeviceBuffer x, DeviceBuffer scratch, DeviceBuffer out) override;
  void rms_norm(DeviceBuffer x, DeviceBuffer w, int64_t n_tokens, int64_t n, float eps,
                DeviceBuffer y) override;
  void rope(DeviceBuffer x, DeviceBuffer positions, int64_t n_tokens, int64_t n_heads,
            int64_t head_dim, int64_t n_rot, float freq_base, float freq_scale, bool neox) override;
  void router_topk(DeviceBuffer logits, int64_t n_tokens, int64_t n_expert, int64_t k,
                   bool renormalize, DeviceBuffer ids, DeviceBuffer weights) override;
  void scatter_add_weighted(DeviceBuffer y, DeviceBuffer index, DeviceBuffer weight, int64_t n_rows,
                            int64_t width, DeviceBuffer out) override;
  void attention(DeviceBuffer q, DeviceBuffer k, DeviceBuffer v, DeviceBuffer k_cache,
                 DeviceBuffer v_cache, int64_t pos0, int64_t n_tokens, int64_t n_head,
                 int64_t n_head_kv, int64_t head_dim, DeviceBuffer out) override;
  void embedding(const DeviceMatrix& table, DeviceBuffer ids, int64_t n_tokens,
                 DeviceBuffer y) override;

  bool register_host(const void* ptr, uint64_t bytes, bool device_writes) override;
  void unregister_host(const void* ptr) override;
  uint64_t workspace_bytes() const override;
  int device() const override { return device_; }

 private:
  void upload_interleaved(Stream stream, DeviceBuffer dst, uint64_t dst_offset,
                          const MatrixRef& host) override;
  struct Allocation {
    void* ptr;
    uint64_t bytes;
  };
  struct StagingSlot {
    void* host = nullptr;
    cudaEvent_t done = nullptr;
  };

  void destroy() noexcept;
  void use_device() const;
  cudaStream_t stream(Stream s) const { return s == Stream::Copy ? copy_ : compute_; }
  // The following require mu_ held.
  uint8_t* at(DeviceBuffer buf, uint64_t offset, uint64_t bytes, const char* op,
              const char* arg) const;
  float* floats(DeviceBuffer buf, int64_t n, const char* op, const char* arg) const;
  int32_t* ints(DeviceBuffer buf, int64_t n, const char* op, const char* arg) const;
  RowSource matrix(const DeviceMatrix& m, const char* op, const char* arg) const;
  void* workspace(uint64_t bytes);
  void matmul_locked(const RowSource& w, const float* x, int64_t n_tokens, float* y);
  bool is_pinned(const void* p) const;
  void staged_copy(cudaStream_t s, uint8_t* dst, const uint8_t* src, uint64_t bytes);
  void staged_fill(cudaStream_t s, uint8_t* dst, uint64_t bytes, uint64_t unit,
                   const std::function<void(uint64_t, uint64_t, uint8_t*)>& fill);
  void retire_completed_events();

  int device_ = 0;
  std::string name_;
  uint64_t budget_ = 0;
  mutable std::mutex mu_;
  std::unordered_map<uint64_t, Allocation> buffers_;
  uint64_t next_buffer_ = 1;
  uint64_t used_ = 0;  // bytes of buffers_
  cudaStream_t compute_ = nullptr, copy_ = nullptr;
  cublasHandle_t cublas_ = nullptr;
  std::unordered_map<uint64_t, cudaEvent_t> events_;
  std::vector<cudaEvent_t> event_pool_;
  uint64_t next_event_ = 1;
  void* workspace_ = nullptr;
  uint64_t workspace_bytes_ = 0;
  unsigned* error_word_ = nullptr;  // device memory
  // An op that can set error_word_ was queued since synchronize(Compute) last read it: only
  // then does synchronize read it (one copy and wait less per expert batch).
  bool error_word_pending_ = false;
  std::vector<StagingSlot> ring_;
  size_t ring_next_ = 0;
  std::map<uintptr_t, uint64_t> registered_;  // start -> bytes of register_host ranges
};

}  // namespace tandem::cuda
