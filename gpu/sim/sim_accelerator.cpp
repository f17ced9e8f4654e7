#include "gpu/sim/sim_accelerator.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>

#include "cpu/interleave.h"
#include "engine/trace.h"
#include "gpu/sim_accelerator.h"

namespace tandem {
namespace {

constexpr uint64_t kAlignment = 256;  // what cudaMalloc guarantees

std::string track_of(Stream s) {
  return s == Stream::Copy ? "sim pcie copy" : "sim gpu compute";
}

}  // namespace

std::unique_ptr<Accelerator> make_sim_accelerator(const HardwareProfile& profile,
                                                  uint64_t memory_budget, TraceRecorder* trace) {
  return std::make_unique<SimAccelerator>(profile, memory_budget, trace);
}

SimAccelerator::SimAccelerator(const HardwareProfile& profile, uint64_t memory_budget,
                               TraceRecorder* trace)
    : profile_(profile),
      cost_(profile),
      budget_(memory_budget ? memory_budget : profile.vram_bytes),
      trace_(trace) {
  profile_.validate("sim accelerator profile '" + profile_.name + "'");
  if (budget_ == 0) {
    throw AcceleratorError("sim: no memory budget given and profile '" + profile_.name +
                           "' has no vram_bytes");
  }
}

SimAccelerator::~SimAccelerator() {
  // Finish queued work before buffers go away; errors no longer have anyone to report to.
  for (SimStream* s : {&compute_, &copy_}) {
    try {
      s->drain();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sim: error in %s stream at shutdown: %s\n", s->name().c_str(),
                   e.what());
    }
  }
  if (used_ != 0) {
    std::fprintf(stderr, "sim: %llu bytes of device memory still allocated at shutdown\n",
                 static_cast<unsigned long long>(used_));
  }
}

std::string SimAccelerator::name() const {
  return "sim (" + profile_.name + ")";
}

uint64_t SimAccelerator::live_bytes() const {
  std::lock_guard<std::mutex> lock(memory_mutex_);
  return used_;
}

DeviceBuffer SimAccelerator::allocate(uint64_t bytes) {
  if (bytes == 0) return DeviceBuffer{};
  std::lock_guard<std::mutex> lock(memory_mutex_);
  if (bytes > budget_ || used_ > budget_ - bytes) {
    throw AcceleratorError("sim: cannot allocate " + std::to_string(bytes) +
                           " bytes: " + std::to_string(used_) + " of the " +
                           std::to_string(budget_) + " byte budget are in use");
  }
  const uint64_t padded = (bytes + kAlignment - 1) / kAlignment * kAlignment;
  void* p = std::aligned_alloc(kAlignment, padded);
  if (!p)
    throw AcceleratorError("sim: host allocation of " + std::to_string(bytes) + " bytes failed");
  std::memset(p, 0, padded);
  const uint64_t handle = next_handle_++;
  buffers_.emplace(handle, Allocation{{static_cast<uint8_t*>(p), std::free}, bytes});
  used_ += bytes;
  return DeviceBuffer{handle, bytes};
}

void SimAccelerator::release(DeviceBuffer buffer) {
  if (!buffer) return;
  // Queued ops may still use the buffer. An op's error surfacing here must not leak the
  // buffer, so it is rethrown only after the release.
  std::exception_ptr op_error;
  for (Stream s : {Stream::Compute, Stream::Copy}) {
    try {
      synchronize(s);
    } catch (const AcceleratorError&) {
      if (!op_error) op_error = std::current_exception();
    }
  }
  {
    std::lock_guard<std::mutex> lock(memory_mutex_);
    auto it = buffers_.find(buffer.handle);
    if (it == buffers_.end()) {
      throw AcceleratorError("sim: release of unknown or already released buffer " +
                             std::to_string(buffer.handle));
    }
    used_ -= it->second.bytes;
    buffers_.erase(it);
  }
  if (op_error) std::rethrow_exception(op_error);
}

uint8_t* SimAccelerator::at(DeviceBuffer buf, uint64_t offset, uint64_t bytes, const char* op,
                            const char* arg) const {
  std::lock_guard<std::mutex> lock(memory_mutex_);
  auto it = buffers_.find(buf.handle);
  if (it == buffers_.end()) {
    throw AcceleratorError(std::string("sim ") + op + ": " + arg +
                           " is not a live buffer (handle " + std::to_string(buf.handle) + ")");
  }
  if (offset > it->second.bytes || bytes > it->second.bytes - offset) {
    throw AcceleratorError(std::string("sim ") + op + ": " + arg + " needs bytes [" +
                           std::to_string(offset) + ", " + std::to_string(offset + bytes) +
                           ") but the buffer holds " + std::to_string(it->second.bytes));
  }
  return it->second.data.get() + offset;
}

float* SimAccelerator::floats(DeviceBuffer buf, int64_t n, const char* op, const char* arg) const {
  if (n < 0) throw AcceleratorError(std::string("sim ") + op + ": negative size for " + arg);
  return reinterpret_cast<float*>(at(buf, 0, static_cast<uint64_t>(n) * sizeof(float), op, arg));
}

SimStream& SimAccelerator::stream(Stream s) {
  return s == Stream::Copy ? copy_ : compute_;
}

double SimAccelerator::clock_us(Stream s) const {
  return s == Stream::Copy ? copy_.clock_us() : compute_.clock_us();
}

void SimAccelerator::launch(Stream s, std::string span_name, double dur_us, Args args,
                            std::function<void()> work) {
  stream(s).enqueue([this, s, dur_us, work = std::move(work), span_name = std::move(span_name),
                     args = std::move(args)](double& clock) mutable {
    const double start = clock;
    clock += dur_us;
    try {
      work();
    } catch (const std::exception& e) {
      throw AcceleratorError("sim " + span_name + ": " + e.what());
    }
    if (trace_) {
      trace_->add(TraceSpan{std::move(span_name), "sim", track_of(s), start, dur_us,
                            std::move(args), "sim (virtual clock)"});
    }
  });
}

void SimAccelerator::copy_to_device(Stream s, DeviceBuffer dst, uint64_t dst_offset,
                                    const void* src, uint64_t bytes) {
  uint8_t* d = at(dst, dst_offset, bytes, "copy_to_device", "dst");
  launch(s, "h2d " + std::to_string(bytes) + " B", cost_.copy_us(bytes),
         {{"bytes", std::to_string(bytes)}}, [d, src, bytes] { std::memcpy(d, src, bytes); });
}

void SimAccelerator::upload_interleaved(Stream s, DeviceBuffer dst, uint64_t dst_offset,
                                        const MatrixRef& host) {
  const uint64_t bytes = static_cast<uint64_t>(host.n_rows) * host.row_stride;
  uint8_t* d = at(dst, dst_offset, bytes, "upload_matrix", "dst");
  // The same bytes cross the link; the device stores them in the file's row layout.
  launch(s, "h2d " + std::to_string(bytes) + " B", cost_.copy_us(bytes),
         {{"bytes", std::to_string(bytes)}},
         [d, host] { copy_rows_deinterleaved(host, 0, host.n_rows, d); });
}

void SimAccelerator::copy_to_host(Stream s, void* dst, DeviceBuffer src, uint64_t src_offset,
                                  uint64_t bytes) {
  const uint8_t* p = at(src, src_offset, bytes, "copy_to_host", "src");
  launch(s, "d2h " + std::to_string(bytes) + " B", cost_.copy_us(bytes),
         {{"bytes", std::to_string(bytes)}}, [dst, p, bytes] { std::memcpy(dst, p, bytes); });
}

void SimAccelerator::retire_events() {
  const double floor = std::min(compute_.clock_us(), copy_.clock_us());
  for (auto it = events_.begin(); it != events_.end();) {
    if (it->second.done && it->second.time_us <= floor)
      it = events_.erase(it);
    else
      ++it;
  }
  retire_at_ = std::max<size_t>(4096, 2 * events_.size());
}

Event SimAccelerator::record(Stream s) {
  uint64_t handle = 0;
  {
    std::lock_guard<std::mutex> lock(event_mutex_);
    if (events_.size() >= retire_at_) retire_events();
    handle = next_event_++;
    events_.emplace(handle, EventState{});
  }
  stream(s).enqueue([this, handle](double& clock) {
    {
      std::lock_guard<std::mutex> lock(event_mutex_);
      events_[handle] = EventState{true, clock};
    }
    event_cv_.notify_all();
  });
  return Event{handle};
}

void SimAccelerator::wait(Stream s, Event event) {
  if (event.handle == 0) return;
  {
    std::lock_guard<std::mutex> lock(event_mutex_);
    if (event.handle >= next_event_) {
      throw AcceleratorError("sim wait: unknown event " + std::to_string(event.handle));
    }
  }
  stream(s).enqueue([this, handle = event.handle](double& clock) {
    std::unique_lock<std::mutex> lock(event_mutex_);
    // A handle no longer listed completed before both clocks: nothing to wait for.
    event_cv_.wait(lock, [&] {
      const auto it = events_.find(handle);
      return it == events_.end() || it->second.done;
    });
    const auto it = events_.find(handle);
    if (it != events_.end()) clock = std::max(clock, it->second.time_us);
  });
}

double SimAccelerator::elapsed_us(Event start, Event end) {
  std::lock_guard<std::mutex> lock(event_mutex_);
  const auto a = events_.find(start.handle), b = events_.find(end.handle);
  if (a == events_.end() || b == events_.end() || !a->second.done || !b->second.done) return -1.0;
  return b->second.time_us - a->second.time_us;
}

void SimAccelerator::synchronize(Stream s) {
  try {
    stream(s).drain();
  } catch (const AcceleratorError&) {
    throw;
  } catch (const std::exception& e) {
    throw AcceleratorError(std::string("sim ") + stream(s).name() + " stream: " + e.what());
  }
}

}  // namespace tandem
