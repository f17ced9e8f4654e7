// CudaAcceleratorImpl: memory, streams, events, copies, and the factory. The ops are in
// cuda_ops.cpp.
#include <algorithm>
#include <cstring>
#include <iterator>
#include <string>

#include "cpu/interleave.h"
#include "gpu/cuda/common.cuh"
#include "gpu/cuda/cuda_accelerator_impl.h"
#include "gpu/cuda/device_query.h"

namespace tandem {
namespace cuda {
namespace {

constexpr size_t kRingSlots = 4;
constexpr uint64_t kRingSlotBytes = uint64_t{4} << 20;
// Events outstanding before completed ones are recycled, and the most recent events, which
// are never recycled: callers read the time between two events (elapsed_us) a few layers
// after recording them, and a recycled event has no time to give.
constexpr size_t kEventsBeforeRetire = 4096;
constexpr uint64_t kRecentEventsKept = 1024;
// Workspace grows in steps of this size to avoid a reallocation per shape.
constexpr uint64_t kWorkspaceGranule = uint64_t{1} << 20;

std::string str(uint64_t v) {
  return std::to_string(v);
}

}  // namespace

CudaAcceleratorImpl::CudaAcceleratorImpl(int device, uint64_t memory_budget) : device_(device) {
  try {
    CUDA_CHECK(cudaSetDevice(device_));
    cudaDeviceProp prop{};
    CUDA_CHECK(cudaGetDeviceProperties(&prop, device_));
    name_ = "cuda:" + std::to_string(device_) + " " + prop.name;
    size_t free_bytes = 0, total_bytes = 0;
    CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
    // Default: the free memory less 5% for the CUDA context, cuBLAS and fragmentation.
    budget_ = memory_budget != 0 ? memory_budget : free_bytes / 20 * 19;
    if (budget_ > total_bytes) {
      throw AcceleratorError("CUDA: memory budget of " + str(budget_) + " bytes exceeds the " +
                             str(total_bytes) + " bytes of " + name_);
    }
    CUDA_CHECK(cudaStreamCreateWithFlags(&compute_, cudaStreamNonBlocking));
    CUDA_CHECK(cudaStreamCreateWithFlags(&copy_, cudaStreamNonBlocking));
    CUBLAS_CHECK(cublasCreate(&cublas_));
    CUBLAS_CHECK(cublasSetStream(cublas_, compute_));
    CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&error_word_), sizeof(unsigned)));
    CUDA_CHECK(cudaMemsetAsync(error_word_, 0, sizeof(unsigned), compute_));
    CUDA_CHECK(cudaStreamSynchronize(compute_));
  } catch (...) {
    destroy();
    throw;
  }
}

CudaAcceleratorImpl::~CudaAcceleratorImpl() {
  destroy();
}

// Frees everything that exists; errors are ignored (nothing can be reported from here).
void CudaAcceleratorImpl::destroy() noexcept {
  cudaSetDevice(device_);
  if (compute_) cudaStreamSynchronize(compute_);
  if (copy_) cudaStreamSynchronize(copy_);
  for (auto& [handle, a] : buffers_) cudaFree(a.ptr);
  buffers_.clear();
  used_ = 0;
  for (auto& [handle, e] : events_) cudaEventDestroy(e);
  events_.clear();
  for (cudaEvent_t e : event_pool_) cudaEventDestroy(e);
  event_pool_.clear();
  for (StagingSlot& slot : ring_) {
    if (slot.done) cudaEventDestroy(slot.done);
    if (slot.host) cudaFreeHost(slot.host);
  }
  ring_.clear();
  for (auto& [start, bytes] : registered_) cudaHostUnregister(reinterpret_cast<void*>(start));
  registered_.clear();
  if (workspace_) cudaFree(workspace_);
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  if (error_word_) cudaFree(error_word_);
  error_word_ = nullptr;
  if (cublas_) cublasDestroy(cublas_);
  cublas_ = nullptr;
  if (copy_) cudaStreamDestroy(copy_);
  if (compute_) cudaStreamDestroy(compute_);
  copy_ = compute_ = nullptr;
  cudaGetLastError();  // leave no sticky error behind for the next user of the device
}

void CudaAcceleratorImpl::use_device() const {
  CUDA_CHECK(cudaSetDevice(device_));
}

uint64_t CudaAcceleratorImpl::live_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return used_;
}

uint64_t CudaAcceleratorImpl::workspace_bytes() const {
  std::lock_guard<std::mutex> lock(mu_);
  return workspace_bytes_;
}

DeviceBuffer CudaAcceleratorImpl::allocate(uint64_t bytes) {
  if (bytes == 0) return DeviceBuffer{};
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  const uint64_t in_use = used_ + workspace_bytes_;
  if (bytes > budget_ || in_use > budget_ - bytes) {
    throw AcceleratorError("CUDA: cannot allocate " + str(bytes) + " bytes: " + str(used_) +
                           " bytes of buffers and " + str(workspace_bytes_) +
                           " bytes of workspace of the " + str(budget_) +
                           " byte budget are in use on " + name_);
  }
  void* p = nullptr;
  CUDA_CHECK(cudaMalloc(&p, bytes));
  // Zeroed like the sim's buffers, and ready before either stream can touch it.
  cudaError_t err = cudaMemsetAsync(p, 0, bytes, compute_);
  if (err == cudaSuccess) err = cudaStreamSynchronize(compute_);
  if (err != cudaSuccess) {
    cudaFree(p);
    CUDA_CHECK(err);
  }
  const uint64_t handle = next_buffer_++;
  buffers_.emplace(handle, Allocation{p, bytes});
  used_ += bytes;
  return DeviceBuffer{handle, bytes};
}

void CudaAcceleratorImpl::release(DeviceBuffer buffer) {
  if (!buffer) return;
  std::lock_guard<std::mutex> lock(mu_);
  auto it = buffers_.find(buffer.handle);
  if (it == buffers_.end()) {
    throw AcceleratorError("CUDA release: handle " + str(buffer.handle) + " is not a live buffer");
  }
  use_device();
  // Queued work may still read the buffer; cudaFree does not wait for non-blocking streams.
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  CUDA_CHECK(cudaStreamSynchronize(copy_));
  const Allocation a = it->second;
  buffers_.erase(it);
  used_ -= a.bytes;
  CUDA_CHECK(cudaFree(a.ptr));
}

uint8_t* CudaAcceleratorImpl::at(DeviceBuffer buf, uint64_t offset, uint64_t bytes, const char* op,
                                 const char* arg) const {
  auto it = buffers_.find(buf.handle);
  if (it == buffers_.end()) {
    throw AcceleratorError(std::string("CUDA ") + op + ": " + arg +
                           " is not a live buffer (handle " + str(buf.handle) + ")");
  }
  if (offset > it->second.bytes || bytes > it->second.bytes - offset) {
    throw AcceleratorError(std::string("CUDA ") + op + ": " + arg + " needs bytes [" + str(offset) +
                           ", " + str(offset + bytes) + ") but the buffer holds " +
                           str(it->second.bytes));
  }
  return static_cast<uint8_t*>(it->second.ptr) + offset;
}

float* CudaAcceleratorImpl::floats(DeviceBuffer buf, int64_t n, const char* op,
                                   const char* arg) const {
  if (n < 0) throw AcceleratorError(std::string("CUDA ") + op + ": negative size for " + arg);
  return reinterpret_cast<float*>(at(buf, 0, static_cast<uint64_t>(n) * sizeof(float), op, arg));
}

int32_t* CudaAcceleratorImpl::ints(DeviceBuffer buf, int64_t n, const char* op,
                                   const char* arg) const {
  if (n < 0) throw AcceleratorError(std::string("CUDA ") + op + ": negative size for " + arg);
  return reinterpret_cast<int32_t*>(
      at(buf, 0, static_cast<uint64_t>(n) * sizeof(int32_t), op, arg));
}

void* CudaAcceleratorImpl::workspace(uint64_t bytes) {
  if (bytes <= workspace_bytes_) return workspace_;
  const uint64_t want = (bytes + kWorkspaceGranule - 1) / kWorkspaceGranule * kWorkspaceGranule;
  if (want > budget_ || used_ > budget_ - want) {
    throw AcceleratorError("CUDA: workspace of " + str(want) +
                           " bytes does not fit: " + str(used_) + " bytes of buffers of the " +
                           str(budget_) + " byte budget are in use on " + name_);
  }
  CUDA_CHECK(cudaStreamSynchronize(compute_));  // queued ops may still use the old workspace
  if (workspace_) CUDA_CHECK(cudaFree(workspace_));
  workspace_ = nullptr;
  workspace_bytes_ = 0;
  CUDA_CHECK(cudaMalloc(&workspace_, want));
  workspace_bytes_ = want;
  return workspace_;
}

// ---- copies ----

bool CudaAcceleratorImpl::is_pinned(const void* p) const {
  const auto addr = reinterpret_cast<uintptr_t>(p);
  auto it = registered_.upper_bound(addr);
  if (it != registered_.begin() && addr < std::prev(it)->first + std::prev(it)->second) return true;
  cudaPointerAttributes attr{};
  if (cudaPointerGetAttributes(&attr, p) != cudaSuccess) {
    cudaGetLastError();
    return false;
  }
  return attr.type == cudaMemoryTypeHost;
}

// Pageable source: each chunk is copied into a pinned slot, whose previous DMA must be done.
void CudaAcceleratorImpl::staged_copy(cudaStream_t s, uint8_t* dst, const uint8_t* src,
                                      uint64_t bytes) {
  staged_fill(s, dst, bytes, 1, [src](uint64_t offset, uint64_t n, uint8_t* slot) {
    std::memcpy(slot, src + offset, n);
  });
}

// Chunks of a multiple of `unit` bytes are written by fill(offset, n, slot) into a pinned slot
// whose previous DMA is done, then sent.
void CudaAcceleratorImpl::staged_fill(
    cudaStream_t s, uint8_t* dst, uint64_t bytes, uint64_t unit,
    const std::function<void(uint64_t, uint64_t, uint8_t*)>& fill) {
  if (unit == 0 || unit > kRingSlotBytes) {
    throw AcceleratorError("staged copy: units of " + std::to_string(unit) +
                           " bytes do not fit a staging slot of " + std::to_string(kRingSlotBytes));
  }
  if (ring_.empty()) {
    ring_.resize(kRingSlots);
    for (StagingSlot& slot : ring_) {
      CUDA_CHECK(cudaHostAlloc(&slot.host, kRingSlotBytes, cudaHostAllocDefault));
      CUDA_CHECK(cudaEventCreateWithFlags(&slot.done, cudaEventDisableTiming));
    }
  }
  const uint64_t chunk = kRingSlotBytes / unit * unit;
  for (uint64_t done = 0; done < bytes;) {
    const uint64_t n = std::min(chunk, bytes - done);
    StagingSlot& slot = ring_[ring_next_];
    ring_next_ = (ring_next_ + 1) % ring_.size();
    CUDA_CHECK(cudaEventSynchronize(slot.done));
    fill(done, n, static_cast<uint8_t*>(slot.host));
    CUDA_CHECK(cudaMemcpyAsync(dst + done, slot.host, n, cudaMemcpyHostToDevice, s));
    CUDA_CHECK(cudaEventRecord(slot.done, s));
    done += n;
  }
}

void CudaAcceleratorImpl::copy_to_device(Stream s, DeviceBuffer dst, uint64_t dst_offset,
                                         const void* src, uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  uint8_t* d = at(dst, dst_offset, bytes, "copy_to_device", "dst");
  if (bytes == 0) return;
  use_device();
  if (is_pinned(src)) {
    CUDA_CHECK(cudaMemcpyAsync(d, src, bytes, cudaMemcpyHostToDevice, stream(s)));
  } else {
    staged_copy(stream(s), d, static_cast<const uint8_t*>(src), bytes);
  }
}

void CudaAcceleratorImpl::upload_interleaved(Stream s, DeviceBuffer dst, uint64_t dst_offset,
                                             const MatrixRef& host) {
  const uint64_t bytes = static_cast<uint64_t>(host.n_rows) * host.row_stride;
  std::lock_guard<std::mutex> lock(mu_);
  uint8_t* d = at(dst, dst_offset, bytes, "upload_matrix", "dst");
  if (bytes == 0) return;
  use_device();
  // Rows are rebuilt from their groups while they are staged (the pageable path's memcpy).
  const auto row = static_cast<uint64_t>(host.row_stride);
  staged_fill(stream(s), d, bytes, row * kInterleaveRows,
              [&host, row](uint64_t offset, uint64_t n, uint8_t* slot) {
                const auto r0 = static_cast<int64_t>(offset / row);
                copy_rows_deinterleaved(host, r0, r0 + static_cast<int64_t>(n / row), slot);
              });
}

void CudaAcceleratorImpl::copy_to_host(Stream s, void* dst, DeviceBuffer src, uint64_t src_offset,
                                       uint64_t bytes) {
  std::lock_guard<std::mutex> lock(mu_);
  const uint8_t* p = at(src, src_offset, bytes, "copy_to_host", "src");
  if (bytes == 0) return;
  use_device();
  CUDA_CHECK(cudaMemcpyAsync(dst, p, bytes, cudaMemcpyDeviceToHost, stream(s)));
}

bool CudaAcceleratorImpl::register_host(const void* ptr, uint64_t bytes, bool device_writes) {
  if (!ptr || bytes == 0) return false;
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  void* p = const_cast<void*>(ptr);  // cudaHostRegister takes void*; read-only mappings allowed
  // Read-only registration (which read-only mappings need) makes copies into the range fail.
  if (device_writes || cudaHostRegister(p, bytes, cudaHostRegisterReadOnly) != cudaSuccess) {
    cudaGetLastError();
    if (cudaHostRegister(p, bytes, cudaHostRegisterDefault) != cudaSuccess) {
      cudaGetLastError();
      return false;  // copies from this range use the staging ring
    }
  }
  registered_[reinterpret_cast<uintptr_t>(ptr)] = bytes;
  return true;
}

void CudaAcceleratorImpl::unregister_host(const void* ptr) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = registered_.find(reinterpret_cast<uintptr_t>(ptr));
  if (it == registered_.end()) return;
  use_device();
  // Copies from the range may be in flight.
  CUDA_CHECK(cudaStreamSynchronize(copy_));
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  registered_.erase(it);
  CUDA_CHECK(cudaHostUnregister(const_cast<void*>(ptr)));
}

// ---- events and synchronization ----

void CudaAcceleratorImpl::retire_completed_events() {
  for (auto it = events_.begin(); it != events_.end();) {
    if (it->first + kRecentEventsKept < next_event_ && cudaEventQuery(it->second) == cudaSuccess) {
      event_pool_.push_back(it->second);
      it = events_.erase(it);
    } else {
      cudaGetLastError();  // cudaErrorNotReady is not sticky, but keep the state clean
      ++it;
    }
  }
}

Event CudaAcceleratorImpl::record(Stream s) {
  std::lock_guard<std::mutex> lock(mu_);
  use_device();
  if (events_.size() >= kEventsBeforeRetire) retire_completed_events();
  cudaEvent_t e = nullptr;
  if (!event_pool_.empty()) {
    e = event_pool_.back();
    event_pool_.pop_back();
  } else {
    // Timing stays on so elapsed_us can read the device clock between two events.
    CUDA_CHECK(cudaEventCreate(&e));
  }
  const cudaError_t err = cudaEventRecord(e, stream(s));
  if (err != cudaSuccess) {
    event_pool_.push_back(e);
    CUDA_CHECK(err);
  }
  const uint64_t handle = next_event_++;
  events_.emplace(handle, e);
  return Event{handle};
}

void CudaAcceleratorImpl::wait(Stream s, Event event) {
  if (event.handle == 0) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (event.handle >= next_event_) {
    throw AcceleratorError("CUDA wait: event " + str(event.handle) + " was never recorded");
  }
  auto it = events_.find(event.handle);
  if (it == events_.end()) return;  // retired: it had completed
  use_device();
  CUDA_CHECK(cudaStreamWaitEvent(stream(s), it->second, 0));
}

double CudaAcceleratorImpl::elapsed_us(Event start, Event end) {
  std::lock_guard<std::mutex> lock(mu_);
  const auto a = events_.find(start.handle), b = events_.find(end.handle);
  if (a == events_.end() || b == events_.end()) return -1.0;  // recycled or never recorded
  use_device();
  float ms = 0.0f;
  if (cudaEventElapsedTime(&ms, a->second, b->second) != cudaSuccess) {
    cudaGetLastError();  // not ready yet: not sticky, keep the state clean
    return -1.0;
  }
  return 1e3 * static_cast<double>(ms);
}

void CudaAcceleratorImpl::synchronize(Stream s) {
  use_device();
  CUDA_CHECK(cudaStreamSynchronize(stream(s)));
  if (s != Stream::Compute) return;
  std::lock_guard<std::mutex> lock(mu_);
  if (!error_word_pending_) return;
  error_word_pending_ = false;
  unsigned bits = 0;
  CUDA_CHECK(cudaMemcpyAsync(&bits, error_word_, sizeof bits, cudaMemcpyDeviceToHost, compute_));
  CUDA_CHECK(cudaStreamSynchronize(compute_));
  if (bits == 0) return;
  CUDA_CHECK(cudaMemsetAsync(error_word_, 0, sizeof(unsigned), compute_));
  std::string what;
  if (bits & kErrorEmbeddingId) what += " an embedding id outside the table;";
  if (bits & kErrorScatterIndex) what += " a scatter_add_weighted index outside the output rows;";
  throw AcceleratorError("CUDA: ops on the compute stream of " + name_ + " met" + what +
                         " their outputs for those rows are not valid");
}

}  // namespace cuda

std::unique_ptr<Accelerator> make_cuda_accelerator(int device, uint64_t memory_budget) {
  const int n_devices = cuda_device_count();
  if (n_devices == 0) throw AcceleratorError("CUDA: no CUDA device found (or no driver)");
  if (device < 0 || device >= n_devices) {
    throw AcceleratorError("CUDA: device " + std::to_string(device) + " does not exist (" +
                           std::to_string(n_devices) + " device(s) found)");
  }
  return std::make_unique<cuda::CudaAcceleratorImpl>(device, memory_budget);
}

}  // namespace tandem
