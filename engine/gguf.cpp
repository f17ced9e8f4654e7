#include "engine/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <stdexcept>

#include "cpu/topology.h"
#include "engine/worker_threads.h"

namespace tandem {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
// Limits against hostile counts: far above any real model, far below what could exhaust
// memory before the per-item bounds checks would catch a lie.
constexpr uint64_t kMaxStringBytes = uint64_t{1} << 30;
constexpr int kMaxArrayDepth = 4;

// Reads little-endian values from the mapping, checking every access against its end.
class Cursor {
 public:
  Cursor(const std::string& path, const uint8_t* base, uint64_t size)
      : path_(path), base_(base), size_(size) {}

  uint64_t pos() const { return pos_; }
  uint64_t remaining() const { return size_ - pos_; }

  [[noreturn]] void fail(std::string_view field, uint64_t at, const std::string& why) const {
    std::ostringstream msg;
    msg << path_ << ": invalid GGUF: " << field << " at byte offset " << at << ": " << why;
    throw GgufError(msg.str());
  }

  void need(uint64_t n, std::string_view field) const {
    if (n > remaining()) {
      fail(field, pos_, "needs " + std::to_string(n) + " bytes but the file ends after " +
                            std::to_string(remaining()));
    }
  }

  template <typename T>
  T read(std::string_view field) {
    need(sizeof(T), field);
    T v;
    std::memcpy(&v, base_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }

  std::string read_string(std::string_view field) {
    const uint64_t at = pos_;
    const uint64_t len = read<uint64_t>(field);
    if (len > kMaxStringBytes || len > remaining()) {
      pos_ = at;
      fail(field, at, "string length " + std::to_string(len) + " exceeds the " +
                          std::to_string(remaining() - 8) + " bytes left in the file");
    }
    std::string s(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len;
    return s;
  }

  // An element count that must fit in the rest of the file at min_elem_bytes per element.
  uint64_t read_count(std::string_view field, uint64_t min_elem_bytes) {
    const uint64_t at = pos_;
    const uint64_t n = read<uint64_t>(field);
    if (min_elem_bytes > 0 && n > remaining() / min_elem_bytes) {
      fail(field, at, "count " + std::to_string(n) + " cannot fit in the " +
                          std::to_string(remaining()) + " bytes left in the file");
    }
    return n;
  }

 private:
  const std::string& path_;
  const uint8_t* base_;
  uint64_t size_;
  uint64_t pos_ = 0;
};

uint64_t scalar_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::BOOL: return 1;
    case GgufValueType::UINT16:
    case GgufValueType::INT16: return 2;
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::FLOAT32: return 4;
    case GgufValueType::UINT64:
    case GgufValueType::INT64:
    case GgufValueType::FLOAT64: return 8;
    case GgufValueType::STRING: return 8;  // at least the length prefix
    case GgufValueType::ARRAY: return 12;  // at least type + count
  }
  return 0;
}

bool valid_value_type(uint32_t t) { return t <= static_cast<uint32_t>(GgufValueType::FLOAT64); }

// Reads one scalar of type t into `out` (int/float/bool/string fields).
void read_scalar(Cursor& c, GgufValueType t, const std::string& field, GgufValue& out) {
  out.type = t;
  switch (t) {
    case GgufValueType::UINT8: out.int_value = c.read<uint8_t>(field); break;
    case GgufValueType::INT8: out.int_value = c.read<int8_t>(field); break;
    case GgufValueType::UINT16: out.int_value = c.read<uint16_t>(field); break;
    case GgufValueType::INT16: out.int_value = c.read<int16_t>(field); break;
    case GgufValueType::UINT32: out.int_value = c.read<uint32_t>(field); break;
    case GgufValueType::INT32: out.int_value = c.read<int32_t>(field); break;
    case GgufValueType::UINT64: out.int_value = static_cast<int64_t>(c.read<uint64_t>(field)); break;
    case GgufValueType::INT64: out.int_value = c.read<int64_t>(field); break;
    case GgufValueType::FLOAT32: out.float_value = c.read<float>(field); break;
    case GgufValueType::FLOAT64: out.float_value = c.read<double>(field); break;
    case GgufValueType::BOOL: {
      const uint64_t at = c.pos();
      const uint8_t b = c.read<uint8_t>(field);
      if (b > 1) c.fail(field, at, "bool value " + std::to_string(b) + " is neither 0 nor 1");
      out.bool_value = b != 0;
      out.int_value = b;
      break;
    }
    case GgufValueType::STRING: out.string_value = c.read_string(field); break;
    case GgufValueType::ARRAY: break;  // handled by read_value
  }
}

GgufValue read_value(Cursor& c, GgufValueType t, const std::string& field, int depth) {
  GgufValue v;
  if (t != GgufValueType::ARRAY) {
    read_scalar(c, t, field, v);
    return v;
  }
  v.type = GgufValueType::ARRAY;
  const uint64_t type_at = c.pos();
  const uint32_t elem = c.read<uint32_t>(field + " (array element type)");
  if (!valid_value_type(elem)) {
    c.fail(field + " (array element type)", type_at, "unknown value type " + std::to_string(elem));
  }
  if (elem == static_cast<uint32_t>(GgufValueType::ARRAY) && depth >= kMaxArrayDepth) {
    c.fail(field, type_at, "arrays nested deeper than " + std::to_string(kMaxArrayDepth));
  }
  v.array_type = static_cast<GgufValueType>(elem);
  const uint64_t n = c.read_count(field + " (array length)", scalar_size(v.array_type));
  v.array_size = n;
  for (uint64_t i = 0; i < n; ++i) {
    if (v.array_type == GgufValueType::ARRAY) {
      v.array_items.push_back(read_value(c, v.array_type, field, depth + 1));
      continue;
    }
    GgufValue e;
    read_scalar(c, v.array_type, field, e);
    if (e.is_float()) {
      v.array_floats.push_back(e.float_value);
    } else if (v.array_type == GgufValueType::STRING) {
      v.array_strings.push_back(std::move(e.string_value));
    } else {
      v.array_ints.push_back(e.int_value);
    }
  }
  return v;
}

bool checked_mul(uint64_t a, uint64_t b, uint64_t* out) { return !__builtin_mul_overflow(a, b, out); }

}  // namespace

std::string_view gguf_value_type_name(GgufValueType type) {
  static constexpr std::string_view kNames[] = {"u8",  "i8",   "u16",    "i16", "u32",
                                                "i32", "f32",  "bool",   "str", "arr",
                                                "u64", "i64",  "f64"};
  const auto i = static_cast<uint32_t>(type);
  return i < std::size(kNames) ? kNames[i] : "?";
}

bool GgufValue::is_integer() const {
  switch (type) {
    case GgufValueType::UINT8:
    case GgufValueType::INT8:
    case GgufValueType::UINT16:
    case GgufValueType::INT16:
    case GgufValueType::UINT32:
    case GgufValueType::INT32:
    case GgufValueType::UINT64:
    case GgufValueType::INT64: return true;
    default: return false;
  }
}

bool GgufValue::is_float() const {
  return type == GgufValueType::FLOAT32 || type == GgufValueType::FLOAT64;
}

std::string GgufValue::to_string() const {
  std::ostringstream s;
  if (is_integer()) {
    s << (type == GgufValueType::UINT64 ? std::to_string(static_cast<uint64_t>(int_value))
                                        : std::to_string(int_value));
  } else if (is_float()) {
    s << float_value;
  } else if (type == GgufValueType::BOOL) {
    s << (bool_value ? "true" : "false");
  } else if (type == GgufValueType::STRING) {
    s << '"' << (string_value.size() > 60 ? string_value.substr(0, 57) + "..." : string_value)
      << '"';
  } else {
    s << "[" << gguf_value_type_name(array_type) << " x " << array_size << "]";
  }
  return s.str();
}

std::string TensorView::shape_string() const {
  std::string s = "[";
  for (int i = 0; i < n_dims; ++i) s += (i ? ", " : "") + std::to_string(ne[i]);
  return s + "]";
}

GgufMemory choose_gguf_memory(GgufMemory wanted, uint64_t file_bytes, uint64_t available_bytes) {
  if (wanted == GgufMemory::Read && available_bytes > 0 && file_bytes > available_bytes) {
    return GgufMemory::Map;
  }
  return wanted;
}

uint64_t available_memory_bytes() {
  std::ifstream meminfo("/proc/meminfo");
  std::string key;
  uint64_t kib = 0;
  std::string unit;
  while (meminfo >> key >> kib >> unit) {
    if (key == "MemAvailable:") return kib * 1024;
  }
  return 0;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path, GgufMemory memory,
                                         bool writable) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = path;
  f->fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (f->fd_ < 0) throw GgufError(path + ": cannot open: " + std::strerror(errno));
  struct stat st {};
  if (fstat(f->fd_, &st) != 0) throw GgufError(path + ": cannot stat: " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) throw GgufError(path + ": not a regular file");
  f->size_ = static_cast<uint64_t>(st.st_size);
  if (f->size_ < 24) {
    throw GgufError(path + ": invalid GGUF: header at byte offset 0: file is " + std::to_string(f->size_) +
                    " bytes, smaller than the 24-byte header");
  }
  const uint64_t available = memory == GgufMemory::Read ? available_memory_bytes() : 0;
  f->memory_ = choose_gguf_memory(memory, f->size_, available);
  if (memory == GgufMemory::Read && f->memory_ == GgufMemory::Map) {
    std::fprintf(stderr,
                 "tandem: %s (%llu MiB) is larger than the %llu MiB of available memory: mapping "
                 "it instead of reading it (decode will be slower)\n",
                 path.c_str(), static_cast<unsigned long long>(f->size_ >> 20),
                 static_cast<unsigned long long>(available >> 20));
  }
  // The header is parsed from a mapping in both cases: a bad file is rejected before anything
  // is read, and a read copy can then be placed so that the data section starts on a cache line.
  void* m = mmap(nullptr, f->size_, PROT_READ, MAP_SHARED, f->fd_, 0);
  if (m == MAP_FAILED) throw GgufError(path + ": cannot mmap: " + std::strerror(errno));
  f->region_ = m;
  f->region_size_ = f->size_;
  f->base_ = static_cast<const uint8_t*>(m);
  f->parse();
  if (f->memory_ == GgufMemory::Read) f->read_into_memory();
  if (!writable) f->seal();
  return f;
}

uint8_t* GgufFile::writable_data(const TensorView& t) {
  if (memory_ != GgufMemory::Read || sealed_) {
    throw std::logic_error(path_ + ": tensor '" + t.name + "' is not writable (" +
                           (memory_ == GgufMemory::Read ? "sealed" : "mapped file") + ")");
  }
  return const_cast<uint8_t*>(t.data);  // points into region_, which this file owns
}

void GgufFile::seal() {
  if (sealed_) return;
  sealed_ = true;
}

void GgufFile::read_into_memory() {
  // Huge pages need 2 MiB-aligned addresses: over-allocate and start at the first boundary, plus
  // the shift that puts the data section on a 64-byte line (files align it to 32 only). Split
  // loads would otherwise cost the kernels that read weights one 64-byte vector at a time.
  constexpr uint64_t kHugePage = uint64_t{2} << 20;
  const uint64_t shift = (64 - data_offset_ % 64) % 64;
  const uint64_t region_size = (size_ + shift + 2 * kHugePage - 1) / kHugePage * kHugePage;
  void* m = mmap(nullptr, region_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (m == MAP_FAILED) {
    throw GgufError(path_ + ": cannot allocate " + std::to_string(size_ >> 20) +
                    " MiB to read the file into: " + std::strerror(errno));
  }
  auto* huge = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(m) + kHugePage - 1) /
                                          kHugePage * kHugePage);
  madvise(huge, size_ + shift, MADV_HUGEPAGE);  // advice only: without THP the read still works
  // On several NUMA nodes the pages, not yet touched, go round-robin over them.
  if (const int nodes = interleave_over_numa_nodes(Topology(), huge, size_ + shift); nodes > 1) {
    std::fprintf(stderr, "tandem: %s: weights interleaved over %d NUMA nodes\n", path_.c_str(),
                 nodes);
  }
  uint8_t* dst = huge + shift;
  // Pieces of 64 MiB read by several threads, which share the zeroing of fresh pages and the
  // copy (a one-token `tandem bench` of a 6.1 GB file on the 2-core development VM: 11.3 s
  // with one reader, 9.6 s with two).
  constexpr uint64_t kPiece = uint64_t{64} << 20;
  const uint64_t n_pieces = (size_ + kPiece - 1) / kPiece;
  std::atomic<uint64_t> next{0};
  std::mutex error_mutex;
  std::string error;
  auto read_pieces = [&] {
    for (uint64_t p = next++; p < n_pieces; p = next++) {
      const uint64_t end = std::min(size_, (p + 1) * kPiece);
      for (uint64_t at = p * kPiece; at < end;) {
        const ssize_t n = pread(fd_, dst + at, end - at, static_cast<off_t>(at));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) {
          const std::lock_guard<std::mutex> lock(error_mutex);
          if (error.empty()) {
            error = path_ + ": read failed at byte " + std::to_string(at) + " of " +
                    std::to_string(size_) + ": " + (n < 0 ? std::strerror(errno) : "file shrank");
          }
          next = n_pieces;
          return;
        }
        at += static_cast<uint64_t>(n);
      }
    }
  };
  run_on_worker_threads(std::min<uint64_t>(8, n_pieces), read_pieces);
  if (!error.empty()) {
    munmap(m, region_size);
    throw GgufError(error);
  }
  munmap(region_, region_size_);  // the header's mapping of the file
  region_ = m;
  region_size_ = region_size;
  sealed_ = false;  // until seal()
  base_ = dst;
  for (TensorView& t : tensors_) t.data = base_ + t.offset;
}

GgufFile::~GgufFile() {
  if (region_) munmap(region_, region_size_);
  if (fd_ >= 0) ::close(fd_);
}

void GgufFile::parse() {
  Cursor c(path_, base_, size_);
  const uint32_t magic = c.read<uint32_t>("magic");
  if (magic != kMagic) c.fail("magic", 0, "not a GGUF file (magic is not 'GGUF')");
  version_ = c.read<uint32_t>("version");
  if (version_ != 2 && version_ != 3) {
    c.fail("version", 4, "unsupported version " + std::to_string(version_) + " (need 2 or 3)");
  }
  // Each tensor info needs at least 8 (name len) + 4 (n_dims) + 4 (type) + 8 (offset) bytes;
  // each key/value at least 8 (key len) + 4 (type) + 1.
  const uint64_t n_tensors = c.read_count("tensor count", 24);
  const uint64_t n_kv = c.read_count("metadata count", 13);

  for (uint64_t i = 0; i < n_kv; ++i) {
    const std::string key = c.read_string("metadata key #" + std::to_string(i));
    const uint64_t type_at = c.pos();
    const uint32_t t = c.read<uint32_t>("type of metadata '" + key + "'");
    if (!valid_value_type(t)) {
      c.fail("type of metadata '" + key + "'", type_at, "unknown value type " + std::to_string(t));
    }
    GgufValue v = read_value(c, static_cast<GgufValueType>(t), "metadata '" + key + "'", 0);
    if (metadata_.count(key)) c.fail("metadata '" + key + "'", type_at, "duplicate key");
    if (key == "general.alignment") {
      if (!v.is_integer() || v.int_value <= 0 || (v.int_value & (v.int_value - 1)) != 0) {
        c.fail("metadata 'general.alignment'", type_at,
               "value " + v.to_string() + " is not a positive power of two");
      }
      alignment_ = static_cast<uint64_t>(v.int_value);
    }
    metadata_order_.push_back(key);
    metadata_.emplace(key, std::move(v));
  }

  std::vector<uint64_t> info_offsets;
  for (uint64_t i = 0; i < n_tensors; ++i) {
    TensorView t;
    info_offsets.push_back(c.pos());
    t.name = c.read_string("tensor #" + std::to_string(i) + " name");
    const std::string field = "tensor '" + t.name + "'";
    const uint64_t dims_at = c.pos();
    const uint32_t n_dims = c.read<uint32_t>(field + " n_dims");
    if (n_dims == 0 || n_dims > 4) {
      c.fail(field + " n_dims", dims_at, "n_dims " + std::to_string(n_dims) + " not in 1..4");
    }
    t.n_dims = static_cast<int>(n_dims);
    uint64_t n_elems = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const uint64_t at = c.pos();
      const uint64_t ne = c.read<uint64_t>(field + " ne[" + std::to_string(d) + "]");
      if (ne == 0 || ne > (uint64_t{1} << 40) || !checked_mul(n_elems, ne, &n_elems)) {
        c.fail(field + " ne[" + std::to_string(d) + "]", at,
               "dimension " + std::to_string(ne) + " is zero or too large");
      }
      t.ne[d] = static_cast<int64_t>(ne);
    }
    const uint64_t type_at = c.pos();
    const uint32_t type_id = c.read<uint32_t>(field + " type");
    const auto tt = type_traits(type_id);
    if (!tt) c.fail(field + " type", type_at, "unknown tensor type id " + std::to_string(type_id));
    t.type = tt->type;
    if (t.ne[0] % tt->block_elems != 0) {
      c.fail(field + " ne[0]", dims_at + 4,
             "row length " + std::to_string(t.ne[0]) + " is not a multiple of the " +
                 std::string(tt->name) + " block size " + std::to_string(tt->block_elems));
    }
    uint64_t n_bytes = 0;
    if (!checked_mul(n_elems / tt->block_elems, tt->block_bytes, &n_bytes)) {
      c.fail(field, dims_at, "byte size overflows");
    }
    t.n_bytes = n_bytes;
    const uint64_t off_at = c.pos();
    t.offset = c.read<uint64_t>(field + " offset");
    if (t.offset % alignment_ != 0) {
      c.fail(field + " offset", off_at,
             "data offset " + std::to_string(t.offset) + " is not a multiple of the alignment " +
                 std::to_string(alignment_));
    }
    if (tensor_index_.count(t.name)) c.fail(field, info_offsets.back(), "duplicate tensor name");
    tensor_index_.emplace(t.name, tensors_.size());
    tensors_.push_back(std::move(t));
  }

  // The data section starts at the next multiple of the alignment after the tensor infos.
  const uint64_t header_end = c.pos();
  data_offset_ = (header_end + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_offset_ > size_) {
    c.fail("data section", header_end, "aligned start " + std::to_string(data_offset_) +
                                            " is past the end of the file (" +
                                            std::to_string(size_) + " bytes)");
  }
  for (size_t i = 0; i < tensors_.size(); ++i) {
    TensorView& t = tensors_[i];
    uint64_t end = 0;
    if (__builtin_add_overflow(data_offset_, t.offset, &t.offset) ||
        __builtin_add_overflow(t.offset, t.n_bytes, &end) || end > size_) {
      c.fail("tensor '" + t.name + "' data", info_offsets[i],
             "data [" + std::to_string(t.offset) + ", +" + std::to_string(t.n_bytes) +
                 ") runs past the end of the file (" + std::to_string(size_) + " bytes)");
    }
    t.data = base_ + t.offset;
  }
}

const GgufValue* GgufFile::find(std::string_view key) const {
  auto it = metadata_.find(std::string(key));
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
[[noreturn]] void wrong_type(const std::string& path, std::string_view key, const GgufValue& v,
                             std::string_view wanted) {
  throw GgufError(path + ": metadata '" + std::string(key) + "' has type " +
                  std::string(gguf_value_type_name(v.type)) + ", expected " + std::string(wanted));
}
}  // namespace

int64_t GgufFile::get_int(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw GgufError(path_ + ": missing metadata '" + std::string(key) + "'");
  if (!v->is_integer()) wrong_type(path_, key, *v, "an integer");
  return v->int_value;
}

int64_t GgufFile::get_int(std::string_view key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}

double GgufFile::get_float(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw GgufError(path_ + ": missing metadata '" + std::string(key) + "'");
  if (v->is_float()) return v->float_value;
  if (v->is_integer()) return static_cast<double>(v->int_value);
  wrong_type(path_, key, *v, "a number");
}

double GgufFile::get_float(std::string_view key, double fallback) const {
  return has(key) ? get_float(key) : fallback;
}

bool GgufFile::get_bool(std::string_view key, bool fallback) const {
  const GgufValue* v = find(key);
  if (!v) return fallback;
  if (v->type != GgufValueType::BOOL) wrong_type(path_, key, *v, "bool");
  return v->bool_value;
}

std::string GgufFile::get_string(std::string_view key) const {
  const GgufValue* v = find(key);
  if (!v) throw GgufError(path_ + ": missing metadata '" + std::string(key) + "'");
  if (v->type != GgufValueType::STRING) wrong_type(path_, key, *v, "string");
  return v->string_value;
}

std::string GgufFile::get_string(std::string_view key, std::string_view fallback) const {
  return has(key) ? get_string(key) : std::string(fallback);
}

namespace {
const GgufValue& array_of(const GgufFile& f, std::string_view key) {
  const GgufValue* v = f.find(key);
  if (!v) throw GgufError(f.path() + ": missing metadata '" + std::string(key) + "'");
  if (!v->is_array()) wrong_type(f.path(), key, *v, "array");
  return *v;
}
}  // namespace

const std::vector<std::string>& GgufFile::get_string_array(std::string_view key) const {
  const GgufValue& v = array_of(*this, key);
  if (v.array_type != GgufValueType::STRING) wrong_type(path_, key, v, "array of strings");
  return v.array_strings;
}

const std::vector<int64_t>& GgufFile::get_int_array(std::string_view key) const {
  const GgufValue& v = array_of(*this, key);
  if (!v.array_floats.empty() || v.array_type == GgufValueType::STRING ||
      v.array_type == GgufValueType::ARRAY || v.array_type == GgufValueType::FLOAT32 ||
      v.array_type == GgufValueType::FLOAT64) {
    wrong_type(path_, key, v, "array of integers");
  }
  return v.array_ints;
}

const std::vector<double>& GgufFile::get_float_array(std::string_view key) const {
  const GgufValue& v = array_of(*this, key);
  if (v.array_type != GgufValueType::FLOAT32 && v.array_type != GgufValueType::FLOAT64) {
    wrong_type(path_, key, v, "array of floats");
  }
  return v.array_floats;
}

const TensorView* GgufFile::find_tensor(std::string_view name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

}  // namespace tandem
