// Expert weights held in accelerator memory: a fixed number of equal slots, each holding the
// gate, up and down matrices of one (layer, expert) in their GGUF format, plus the table of
// which expert lives where. Copies run on the accelerator's copy stream.
#pragma once

#include <cstdint>
#include <vector>

#include "engine/model.h"
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
  // Returns the event after which the slot's weights are usable.
  Event load(int32_t slot, int32_t layer, int32_t expert);
  // The matrices of the expert in `slot`.
  DeviceExpert device_expert(int32_t slot) const;
  // Fills every slot in expert-id-major order over layers ((e0,l0), (e0,l1), ... (e1,l0) ...),
  // so each layer caches the same fraction of its experts; waits for the copies.
  void fill_in_expert_order();

 private:
  struct Slot {
    DeviceBuffer buffer;
    int32_t layer = -1, expert = -1;
  };
  const Model& model_;
  Accelerator& accelerator_;
  uint64_t slot_bytes_ = 0;
  std::vector<Slot> slots_;
  std::vector<int32_t> slot_index_;  // [layer * n_expert + expert] -> slot or -1
};

}  // namespace tandem
