// Expert weights held in accelerator memory: a fixed number of equal slots, each holding the
// gate, up and down matrices of one (layer, expert) in their GGUF format, plus the table of
// which expert lives where. Copies run on the accelerator's copy stream.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "engine/model.h"
#include "engine/moe.h"
#include "gpu/accelerator.h"

namespace tandem {

class DeviceExpertSlots {
 public:
  // Allocates as many slots as fit in budget_bytes (0 slots is fine: everything stays on the
  // CPU). Throws AcceleratorError when the accelerator refuses the allocation.
  DeviceExpertSlots(const Model& model, Accelerator& accelerator, uint64_t budget_bytes);
  ~DeviceExpertSlots();
  DeviceExpertSlots(const DeviceExpertSlots&) = delete;
  DeviceExpertSlots& operator=(const DeviceExpertSlots&) = delete;

  int32_t n_slots() const { return static_cast<int32_t>(slots_.size()); }
  uint64_t slot_bytes() const { return slot_bytes_; }
  // Slot holding (layer, expert), or -1.
  int32_t slot_of(int32_t layer, int32_t expert) const;
  // Queues the copy of (layer, expert) into `slot` on the copy stream, replacing its occupant.
  // Returns the event after which the slot's weights are usable (also kept as ready(slot)).
  Event load(int32_t slot, int32_t layer, int32_t expert);
  // The event of the slot's latest load: compute that reads the slot must wait for it. An
  // expert can become resident without the compute stream having waited for its copy (a
  // prefetched expert the planner ran on the CPU, then the cache admitted), so every read waits.
  Event ready(int32_t slot) const { return slots_.at(slot).ready; }
  // The caller has seen `load` complete (the compute stream waited for it, then synchronized):
  // when it is still the slot's latest load, later reads need not wait for it (one device call
  // less per cached expert and layer).
  void mark_loaded(int32_t slot, Event load) {
    Slot& s = slots_.at(slot);
    if (s.ready.handle == load.handle) s.ready = Event{};
  }
  // Marks `slot` as holding nothing (its expert is no longer found there); no copy.
  void forget(int32_t slot);
  // The matrices of the expert in `slot`.
  DeviceExpert device_expert(int32_t slot) const;
  // Fills every slot in expert-id-major order over layers ((e0,l0), (e0,l1), ... (e1,l0) ...),
  // so each layer caches the same fraction of its experts; waits for the copies.
  void fill_in_expert_order();

 private:
  struct Slot {
    DeviceBuffer buffer;
    int32_t layer = -1, expert = -1;
    Event ready{};  // the latest load's completion
  };
  const Model& model_;
  Accelerator& accelerator_;
  uint64_t slot_bytes_ = 0;
  std::vector<Slot> slots_;
  std::vector<int32_t> slot_index_;  // [layer * n_expert + expert] -> slot or -1
};

// Host floats that copies to and from the accelerator read and write, page-locked with it where
// it allows (Accelerator::register_host): such copies return at once, so the host can go on
// (run the CPU's experts) while the device works. Pageable memory would make a copy to the host
// wait for all the work queued before it. Grows, never shrinks; growing waits for the compute
// stream, which may still read or write the old buffer.
class HostStaging {
 public:
  // device_writes: copy_to_host writes into it (not only copy_to_device reading from it).
  HostStaging(Accelerator& accelerator, bool device_writes)
      : accelerator_(accelerator), device_writes_(device_writes) {}
  ~HostStaging();
  HostStaging(const HostStaging&) = delete;
  HostStaging& operator=(const HostStaging&) = delete;

  // At least n floats (contents not kept when it grows).
  float* reserve(size_t n);
  float* data() { return data_; }

 private:
  void free_buffer();

  Accelerator& accelerator_;
  bool device_writes_;
  float* data_ = nullptr;
  size_t capacity_ = 0;
  bool registered_ = false;
};

// Runs experts from their slots on the accelerator's compute stream: the jobs' token rows in
// with one copy, their FFNs with one expert_ffn_batch, the rows out with one copy (per batch of
// at most kBatchBytes of device buffers); one set of device buffers, grown to the largest batch.
class DeviceExpertRunner {
 public:
  // The compute stream waits for the slot's latest load (DeviceExpertSlots::ready) first.
  struct Job {
    const ExpertTokens* group;
    int32_t slot;
  };

  // time_ffn: record events around each batch so ffn_us can read its device time (two extra
  // event records per batch; only callers that read the times ask for them).
  DeviceExpertRunner(const Model& model, Accelerator& accelerator, DeviceExpertSlots& slots,
                     bool time_ffn = false);
  ~DeviceExpertRunner();
  DeviceExpertRunner(const DeviceExpertRunner&) = delete;
  DeviceExpertRunner& operator=(const DeviceExpertRunner&) = delete;

  // Queues the jobs; returns at once (the CPU can work meanwhile).
  void enqueue(const std::vector<Job>& jobs, const float* xn);
  // Waits for the compute stream and writes weight * output of every job into slot_out.
  void finish(const std::vector<Job>& jobs, const Routing& routing, float* slot_out);
  // After finish: the device time of the last enqueue's FFNs, all jobs together (they run as
  // batches), microseconds; negative when the accelerator cannot tell or the runner does not
  // time its FFNs.
  double ffn_us() const;

 private:
  // Device buffers (input and output rows, the FFN's scratch) of one batch at most this large.
  static constexpr int64_t kBatchBytes = int64_t{64} << 20;

  void ensure_capacity(int64_t rows);

  const Model& model_;
  Accelerator& accelerator_;
  DeviceExpertSlots& slots_;
  DeviceBuffer x_, scratch_, out_;
  int64_t capacity_rows_ = 0;
  HostStaging staging_in_, staging_out_;
  bool time_ffn_;
  std::vector<DeviceExpert> experts_;  // of the batch being queued
  std::vector<int64_t> rows_of_;
  std::vector<Event> waited_;  // per job of the last enqueue: the slot load the stream waited for
  std::vector<std::pair<Event, Event>> batch_events_;  // of the last enqueue (time_ffn)
};

}  // namespace tandem
