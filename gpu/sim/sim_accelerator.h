// SimAccelerator: device memory is host memory under a byte budget, each stream is a worker
// thread running its ops in order, copies are memcpy and compute ops run the CPU kernels, so
// results are real. Each stream keeps a virtual clock advanced per op by the cost model; a
// wait() moves the waiting stream's clock to the event's time, so copy/compute overlap shows
// in virtual time (and in the trace) even though the host runs everything on two threads.
//
// As with CUDA, host memory passed to copy_to_device/copy_to_host is read/written when the
// copy runs, so it must stay valid until the stream is synchronized (or an event after it
// completes). release() waits for both streams first, as cudaFree does.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include "cpu/matmul.h"
#include "gpu/accelerator.h"
#include "gpu/hardware_profile.h"
#include "gpu/sim/sim_cost.h"
#include "gpu/sim/sim_stream.h"

namespace tandem {

class TraceRecorder;

class SimAccelerator final : public Accelerator {
 public:
  // memory_budget 0: the profile's vram_bytes. trace may be null.
  SimAccelerator(const HardwareProfile& profile, uint64_t memory_budget, TraceRecorder* trace);
  ~SimAccelerator() override;

  std::string name() const override;
  uint64_t memory_budget() const override { return budget_; }
  uint64_t live_bytes() const override;

  DeviceBuffer allocate(uint64_t bytes) override;
  void release(DeviceBuffer buffer) override;

  void copy_to_device(Stream stream, DeviceBuffer dst, uint64_t dst_offset, const void* src,
                      uint64_t bytes) override;
  void copy_to_host(Stream stream, void* dst, DeviceBuffer src, uint64_t src_offset,
                    uint64_t bytes) override;
  Event record(Stream stream) override;
  // Event{} (handle 0) counts as already complete.
  void wait(Stream stream, Event event) override;
  void synchronize(Stream stream) override;
  // The events' virtual times (the modelled durations of what ran between them).
  double elapsed_us(Event start, Event end) override;

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

  // ---- Sim only. ----
  // The stream's virtual time in microseconds once the work queued so far has run
  // (call synchronize(stream) first for a value that includes it).
  double clock_us(Stream stream) const;
  const HardwareProfile& profile() const { return profile_; }

 private:
  void upload_interleaved(Stream stream, DeviceBuffer dst, uint64_t dst_offset,
                          const MatrixRef& host) override;
  using Args = std::vector<std::pair<std::string, std::string>>;
  struct EventState {
    bool done = false;
    double time_us = 0.0;
  };
  struct Allocation {
    std::unique_ptr<uint8_t, void (*)(void*)> data;
    uint64_t bytes;
  };

  SimStream& stream(Stream s);
  // Host address of bytes [offset, offset + bytes) of a live buffer; throws AcceleratorError
  // naming op and argument when the buffer is unknown or the range does not fit.
  uint8_t* at(DeviceBuffer buf, uint64_t offset, uint64_t bytes, const char* op,
              const char* arg) const;
  float* floats(DeviceBuffer buf, int64_t n, const char* op, const char* arg) const;
  MatrixRef matrix(const DeviceMatrix& m, const char* op, const char* arg) const;
  // Queues work that takes dur_us of virtual time on `s` and records its span.
  void launch(Stream s, std::string span_name, double dur_us, Args args,
              std::function<void()> work);

  HardwareProfile profile_;
  SimCostModel cost_;
  uint64_t budget_;
  TraceRecorder* trace_;

  mutable std::mutex memory_mutex_;
  std::unordered_map<uint64_t, Allocation> buffers_;
  uint64_t used_ = 0;
  uint64_t next_handle_ = 1;

  std::mutex event_mutex_;
  std::condition_variable event_cv_;
  // Outstanding events by handle. Completed ones no stream's clock is behind are dropped once
  // many have piled up (a wait on them could not move a clock), so a long run's memory stays
  // flat; waiting on a dropped handle is a no-op, elapsed_us on one is -1. The next sweep waits
  // until the list has doubled, so a stream left behind (idle at an early clock, which keeps
  // later events) costs memory but never a sweep per event.
  std::unordered_map<uint64_t, EventState> events_;
  uint64_t next_event_ = 1;
  size_t retire_at_ = 4096;
  void retire_events();  // under event_mutex_

  // Declared last: destroyed first, so workers stop before the state they use goes away.
  SimStream compute_{"compute"};
  SimStream copy_{"copy"};
};

}  // namespace tandem
