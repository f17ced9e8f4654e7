#include "engine/device_experts.h"

#include <algorithm>
#include <cstdlib>
#include <new>

#include "cpu/interleave.h"

namespace tandem {
namespace {

// Bytes of one expert's slice of a [cols, rows, n_expert] tensor.
uint64_t expert_slice_bytes(const TensorView& t) {
  return static_cast<uint64_t>(t.row_stride()) * t.ne[1];
}

// On the device every matrix is in its file layout (Accelerator::upload_matrix).
DeviceMatrix slice_matrix(const TensorView& t, DeviceBuffer buffer, uint64_t offset) {
  return DeviceMatrix{file_type_of(t.type), buffer, offset, t.ne[1], t.ne[0], t.row_stride()};
}

}  // namespace

DeviceExpertSlots::DeviceExpertSlots(const Model& model, Accelerator& accelerator,
                                     uint64_t budget_bytes)
    : model_(model), accelerator_(accelerator) {
  for (const LayerWeights& w : model.layers()) {
    slot_bytes_ =
        std::max(slot_bytes_, expert_slice_bytes(w.gate_exps) + expert_slice_bytes(w.up_exps) +
                                  expert_slice_bytes(w.down_exps));
  }
  const ModelSpec& s = model.spec();
  slot_index_.assign(static_cast<size_t>(s.n_layer) * s.n_expert, -1);
  const uint64_t max_slots = static_cast<uint64_t>(s.n_layer) * s.n_expert;
  const uint64_t n = std::min<uint64_t>(slot_bytes_ ? budget_bytes / slot_bytes_ : 0, max_slots);
  try {
    for (uint64_t i = 0; i < n; ++i) slots_.push_back({accelerator.allocate(slot_bytes_), -1, -1});
  } catch (...) {
    for (Slot& slot : slots_) accelerator.release(slot.buffer);
    throw;
  }
}

DeviceExpertSlots::~DeviceExpertSlots() {
  accelerator_.synchronize(Stream::Copy);
  accelerator_.synchronize(Stream::Compute);
  for (Slot& slot : slots_) accelerator_.release(slot.buffer);
}

int32_t DeviceExpertSlots::slot_of(int32_t layer, int32_t expert) const {
  return slot_index_[static_cast<size_t>(layer) * model_.spec().n_expert + expert];
}

Event DeviceExpertSlots::load(int32_t slot, int32_t layer, int32_t expert) {
  Slot& s = slots_.at(slot);
  const int32_t n_expert = model_.spec().n_expert;
  // The old occupant may have moved to another slot since (a staging copy, then admission).
  if (s.layer >= 0 && slot_index_[static_cast<size_t>(s.layer) * n_expert + s.expert] == slot) {
    slot_index_[static_cast<size_t>(s.layer) * n_expert + s.expert] = -1;
  }
  s.layer = layer;
  s.expert = expert;
  slot_index_[static_cast<size_t>(layer) * n_expert + expert] = slot;
  const LayerWeights& w = model_.layers()[layer];
  uint64_t offset = 0;
  for (const TensorView* t : {&w.gate_exps, &w.up_exps, &w.down_exps}) {
    const uint64_t bytes = expert_slice_bytes(*t);
    const MatrixRef host{t->type, t->data + expert * bytes, t->ne[1], t->ne[0], t->row_stride()};
    accelerator_.upload_matrix(Stream::Copy, s.buffer, offset, host);
    offset += bytes;
  }
  s.ready = accelerator_.record(Stream::Copy);
  return s.ready;
}

void DeviceExpertSlots::forget(int32_t slot) {
  Slot& s = slots_.at(slot);
  if (s.layer >= 0) {
    int32_t& index = slot_index_[static_cast<size_t>(s.layer) * model_.spec().n_expert + s.expert];
    if (index == slot) index = -1;
  }
  s.layer = s.expert = -1;
}

DeviceExpert DeviceExpertSlots::device_expert(int32_t slot) const {
  const Slot& s = slots_.at(slot);
  const LayerWeights& w = model_.layers()[s.layer];
  const uint64_t gate_bytes = expert_slice_bytes(w.gate_exps),
                 up_bytes = expert_slice_bytes(w.up_exps);
  return DeviceExpert{slice_matrix(w.gate_exps, s.buffer, 0),
                      slice_matrix(w.up_exps, s.buffer, gate_bytes),
                      slice_matrix(w.down_exps, s.buffer, gate_bytes + up_bytes)};
}

void DeviceExpertSlots::fill_in_expert_order() {
  const ModelSpec& s = model_.spec();
  int32_t slot = 0;
  for (int32_t e = 0; e < s.n_expert && slot < n_slots(); ++e) {
    for (int32_t l = 0; l < s.n_layer && slot < n_slots(); ++l) load(slot++, l, e);
  }
  accelerator_.synchronize(Stream::Copy);
}

HostStaging::~HostStaging() {
  free_buffer();
}

void HostStaging::free_buffer() {
  if (!data_) return;
  accelerator_.synchronize(Stream::Compute);  // queued copies may still use the old buffer
  if (registered_) accelerator_.unregister_host(data_);
  std::free(data_);
  data_ = nullptr;
  capacity_ = 0;
  registered_ = false;
}

float* HostStaging::reserve(size_t n) {
  if (n <= capacity_) return data_;
  free_buffer();
  // Whole pages, so page-locking pins no neighbour's memory; doubling keeps regrowth rare.
  constexpr size_t kPage = 4096;
  const size_t bytes = (std::max(n, 2 * capacity_) * sizeof(float) + kPage - 1) / kPage * kPage;
  data_ = static_cast<float*>(std::aligned_alloc(kPage, bytes));
  if (!data_) throw std::bad_alloc();
  capacity_ = bytes / sizeof(float);
  registered_ = accelerator_.register_host(data_, bytes, device_writes_);
  return data_;
}

DeviceExpertRunner::DeviceExpertRunner(const Model& model, Accelerator& accelerator,
                                       DeviceExpertSlots& slots, bool time_ffn)
    : model_(model),
      accelerator_(accelerator),
      slots_(slots),
      staging_in_(accelerator, false),
      staging_out_(accelerator, true),
      time_ffn_(time_ffn) {}

DeviceExpertRunner::~DeviceExpertRunner() {
  accelerator_.synchronize(Stream::Compute);
  for (DeviceBuffer* b : {&x_, &scratch_, &out_}) {
    if (*b) accelerator_.release(*b);
  }
}

void DeviceExpertRunner::enqueue(const std::vector<Job>& jobs, const float* xn) {
  const ModelSpec& spec = model_.spec();
  const int64_t n_embd = spec.n_embd;
  int64_t total = 0;
  for (const Job& j : jobs) total += static_cast<int64_t>(j.group->token.size());
  float* in = staging_in_.reserve(static_cast<size_t>(total * n_embd));
  float* out = staging_out_.reserve(static_cast<size_t>(total * n_embd));
  int64_t offset = 0;
  for (const Job& j : jobs) {
    gather_rows(*j.group, xn, n_embd, in + offset * n_embd);
    offset += static_cast<int64_t>(j.group->token.size());
  }
  // Batches of whole jobs up to a row limit, so the device buffers stay small next to the
  // expert cache (a job above the limit goes alone): one copy in, one expert_ffn_batch and one
  // copy out per batch, all queued at once.
  const int64_t row_bytes = static_cast<int64_t>(sizeof(float)) * 2 * (n_embd + spec.n_ff_expert);
  const int64_t max_rows = std::max<int64_t>(kBatchBytes / row_bytes, 1);
  batch_events_.clear();
  waited_.clear();
  size_t first = 0;
  offset = 0;
  while (first < jobs.size()) {
    size_t end = first;
    int64_t rows = 0;
    experts_.clear();
    rows_of_.clear();
    while (end < jobs.size()) {
      const auto m = static_cast<int64_t>(jobs[end].group->token.size());
      if (end > first && rows + m > max_rows) break;
      waited_.push_back(slots_.ready(jobs[end].slot));
      accelerator_.wait(Stream::Compute, waited_.back());
      experts_.push_back(slots_.device_expert(jobs[end].slot));
      rows_of_.push_back(m);
      rows += m;
      ++end;
    }
    ensure_capacity(rows);
    const uint64_t bytes = static_cast<uint64_t>(rows * n_embd) * sizeof(float);
    accelerator_.copy_to_device(Stream::Compute, x_, 0, in + offset * n_embd, bytes);
    const Event start = time_ffn_ ? accelerator_.record(Stream::Compute) : Event{};
    accelerator_.expert_ffn_batch(experts_.data(), rows_of_.data(), experts_.size(), x_, scratch_,
                                  out_);
    if (time_ffn_) batch_events_.emplace_back(start, accelerator_.record(Stream::Compute));
    accelerator_.copy_to_host(Stream::Compute, out + offset * n_embd, out_, 0, bytes);
    offset += rows;
    first = end;
  }
}

void DeviceExpertRunner::finish(const std::vector<Job>& jobs, const Routing& routing,
                                float* slot_out) {
  accelerator_.synchronize(Stream::Compute);
  for (size_t i = 0; i < jobs.size() && i < waited_.size(); ++i) {
    slots_.mark_loaded(jobs[i].slot, waited_[i]);
  }
  const int64_t n_embd = model_.spec().n_embd;
  int64_t offset = 0;
  for (const Job& j : jobs) {
    scatter_weighted(*j.group, routing, staging_out_.data() + offset * n_embd, n_embd, slot_out);
    offset += static_cast<int64_t>(j.group->token.size());
  }
}

double DeviceExpertRunner::ffn_us() const {
  if (batch_events_.empty()) return -1.0;
  double us = 0;
  for (const auto& [start, end] : batch_events_) {
    const double t = accelerator_.elapsed_us(start, end);
    if (!(t > 0)) return -1.0;
    us += t;
  }
  return us;
}

void DeviceExpertRunner::ensure_capacity(int64_t rows) {
  if (rows <= capacity_rows_) return;
  accelerator_.synchronize(Stream::Compute);
  for (DeviceBuffer* b : {&x_, &scratch_, &out_}) {
    if (*b) accelerator_.release(*b);
    *b = DeviceBuffer{};
  }
  const ModelSpec& s = model_.spec();
  x_ = accelerator_.allocate(static_cast<uint64_t>(rows) * s.n_embd * sizeof(float));
  scratch_ = accelerator_.allocate(static_cast<uint64_t>(rows) * s.n_ff_expert * 2 * sizeof(float));
  out_ = accelerator_.allocate(static_cast<uint64_t>(rows) * s.n_embd * sizeof(float));
  capacity_rows_ = rows;
}

}  // namespace tandem
