#include "engine/gguf_writer.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <stdexcept>

namespace tandem {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" little-endian
constexpr uint32_t kVersion = 3;
constexpr uint64_t kDefaultAlignment = 32;
constexpr size_t kMaxTensorName = 63;  // ggml's GGML_MAX_NAME (64) minus the terminator
constexpr size_t kIoBufferBytes = size_t{1} << 20;

bool is_power_of_two(uint64_t x) {
  return x != 0 && (x & (x - 1)) == 0;
}

GgufValue scalar(GgufValueType type) {
  GgufValue v;
  v.type = type;
  return v;
}

bool is_float_type(GgufValueType t) {
  return t == GgufValueType::FLOAT32 || t == GgufValueType::FLOAT64;
}

uint64_t array_length(const GgufValue& v) {
  if (v.array_type == GgufValueType::STRING) return v.array_strings.size();
  if (v.array_type == GgufValueType::ARRAY) return v.array_items.size();
  if (is_float_type(v.array_type)) return v.array_floats.size();
  return v.array_ints.size();
}

// Type ids in range, and array elements held in the vector their element type reads from.
void check_value(const std::string& key, const GgufValue& v) {
  const auto last = static_cast<uint32_t>(GgufValueType::FLOAT64);
  if (static_cast<uint32_t>(v.type) > last ||
      (v.is_array() && static_cast<uint32_t>(v.array_type) > last)) {
    throw std::invalid_argument("metadata '" + key + "': unknown value type");
  }
  if (!v.is_array()) return;
  const uint64_t n = array_length(v);
  const uint64_t held =
      v.array_strings.size() + v.array_items.size() + v.array_floats.size() + v.array_ints.size();
  if (held != n) {
    throw std::invalid_argument("metadata '" + key +
                                "': array elements are not stored for element type " +
                                std::string(gguf_value_type_name(v.array_type)));
  }
  for (const GgufValue& item : v.array_items) {
    if (!item.is_array())
      throw std::invalid_argument("metadata '" + key + "': an array of arrays holds a non-array");
    check_value(key, item);
  }
  if (v.array_type == GgufValueType::BOOL &&
      std::any_of(v.array_ints.begin(), v.array_ints.end(),
                  [](int64_t b) { return b != 0 && b != 1; })) {
    throw std::invalid_argument("metadata '" + key +
                                "': a bool array holds a value other than 0 or 1");
  }
}

}  // namespace

GgufWriter::GgufWriter(uint64_t alignment) : alignment_(alignment) {
  if (!is_power_of_two(alignment)) {
    throw std::invalid_argument("GGUF alignment " + std::to_string(alignment) +
                                " is not a power of two");
  }
}

void GgufWriter::add(const std::string& key, const GgufValue& value) {
  if (file_) throw std::logic_error("GgufWriter: metadata '" + key + "' added after begin()");
  if (key.empty()) throw std::invalid_argument("GgufWriter: empty metadata key");
  if (keys_.count(key))
    throw std::invalid_argument("GgufWriter: duplicate metadata key '" + key + "'");
  check_value(key, value);
  if (key == "general.alignment") {
    // Readers take the data alignment from this key, so the layout must follow it.
    if (!value.is_integer() || value.int_value <= 0 ||
        !is_power_of_two(static_cast<uint64_t>(value.int_value))) {
      throw std::invalid_argument("GgufWriter: general.alignment " + value.to_string() +
                                  " is not a positive power of two");
    }
    alignment_ = static_cast<uint64_t>(value.int_value);
  }
  keys_.insert(key);
  kv_.emplace_back(key, value);
}

void GgufWriter::add_string(const std::string& key, const std::string& value) {
  GgufValue v = scalar(GgufValueType::STRING);
  v.string_value = value;
  add(key, v);
}

void GgufWriter::add_u32(const std::string& key, uint32_t value) {
  GgufValue v = scalar(GgufValueType::UINT32);
  v.int_value = value;
  add(key, v);
}

void GgufWriter::add_i32(const std::string& key, int32_t value) {
  GgufValue v = scalar(GgufValueType::INT32);
  v.int_value = value;
  add(key, v);
}

void GgufWriter::add_u64(const std::string& key, uint64_t value) {
  GgufValue v = scalar(GgufValueType::UINT64);
  v.int_value = static_cast<int64_t>(value);  // bit pattern kept, as the reader does
  add(key, v);
}

void GgufWriter::add_f32(const std::string& key, float value) {
  GgufValue v = scalar(GgufValueType::FLOAT32);
  v.float_value = value;
  add(key, v);
}

void GgufWriter::add_bool(const std::string& key, bool value) {
  GgufValue v = scalar(GgufValueType::BOOL);
  v.bool_value = value;
  v.int_value = value;
  add(key, v);
}

size_t GgufWriter::add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne) {
  if (file_) throw std::logic_error("GgufWriter: tensor '" + name + "' declared after begin()");
  if (name.empty() || name.size() > kMaxTensorName) {
    throw std::invalid_argument("tensor name '" + name + "' must have 1 to " +
                                std::to_string(kMaxTensorName) + " bytes");
  }
  if (tensor_names_.count(name))
    throw std::invalid_argument("tensor '" + name + "' declared twice");
  if (ne.empty() || ne.size() > 4)
    throw std::invalid_argument("tensor '" + name + "' needs 1 to 4 dimensions");
  uint64_t n = 1;
  for (int64_t d : ne) {
    if (d <= 0 || __builtin_mul_overflow(n, static_cast<uint64_t>(d), &n)) {
      throw std::invalid_argument("tensor '" + name + "': dimension " + std::to_string(d) +
                                  " is not positive or the element count overflows");
    }
  }
  const TypeTraits& t = traits(type);
  if (ne[0] % t.block_elems != 0) {
    throw std::invalid_argument("tensor '" + name + "': row length " + std::to_string(ne[0]) +
                                " is not a multiple of the " + std::string(t.name) +
                                " block size " + std::to_string(t.block_elems));
  }
  tensor_names_.insert(name);
  tensors_.push_back({name, type, std::move(ne), n / t.block_elems * t.block_bytes, 0});
  return tensors_.size() - 1;
}

void GgufWriter::put(const void* data, uint64_t bytes) {
  if (bytes && std::fwrite(data, 1, bytes, file_) != bytes) {
    throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
  }
  written_ += bytes;
}

void GgufWriter::put_string(const std::string& s) {
  const uint64_t n = s.size();
  put(&n, sizeof n);
  put(s.data(), n);
}

void GgufWriter::put_value(const GgufValue& v) {
  auto put_int = [&](GgufValueType t, int64_t x) {
    switch (t) {
      case GgufValueType::UINT8:
      case GgufValueType::INT8:
      case GgufValueType::BOOL: {
        const auto b = static_cast<uint8_t>(x);
        put(&b, 1);
        break;
      }
      case GgufValueType::UINT16:
      case GgufValueType::INT16: {
        const auto h = static_cast<uint16_t>(x);
        put(&h, 2);
        break;
      }
      case GgufValueType::UINT32:
      case GgufValueType::INT32: {
        const auto w = static_cast<uint32_t>(x);
        put(&w, 4);
        break;
      }
      default:
        put(&x, 8);
        break;
    }
  };
  auto put_float = [&](GgufValueType t, double x) {
    if (t == GgufValueType::FLOAT32) {
      const auto f = static_cast<float>(x);
      put(&f, 4);
    } else {
      put(&x, 8);
    }
  };
  if (v.type == GgufValueType::STRING) return put_string(v.string_value);
  if (v.is_float()) return put_float(v.type, v.float_value);
  if (v.type != GgufValueType::ARRAY)
    return put_int(v.type, v.type == GgufValueType::BOOL ? v.bool_value : v.int_value);
  const auto elem = static_cast<uint32_t>(v.array_type);
  put(&elem, 4);
  const uint64_t n = array_length(v);
  put(&n, 8);
  for (uint64_t i = 0; i < n; ++i) {
    if (v.array_type == GgufValueType::STRING)
      put_string(v.array_strings[i]);
    else if (v.array_type == GgufValueType::ARRAY)
      put_value(v.array_items[i]);
    else if (is_float_type(v.array_type))
      put_float(v.array_type, v.array_floats[i]);
    else
      put_int(v.array_type, v.array_ints[i]);
  }
}

void GgufWriter::pad_to_alignment() {
  static const char zeros[256] = {};
  for (uint64_t pad = (alignment_ - written_ % alignment_) % alignment_; pad > 0;) {
    const uint64_t n = std::min<uint64_t>(pad, sizeof zeros);
    put(zeros, n);
    pad -= n;
  }
}

void GgufWriter::begin(const std::string& path) {
  if (file_) throw std::logic_error("GgufWriter: begin() called twice");
  // Readers assume 32 without the key, so any other alignment must be stated in the file.
  if (alignment_ != kDefaultAlignment && !keys_.count("general.alignment")) {
    GgufValue v = scalar(GgufValueType::UINT32);
    v.int_value = static_cast<int64_t>(alignment_);
    add("general.alignment", v);
  }
  // Tensor offsets follow the final alignment (general.alignment may have come last).
  uint64_t offset = 0;
  for (Info& t : tensors_) {
    t.offset = offset;
    offset = (offset + t.n_bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  path_ = path;
  file_ = std::fopen(path.c_str(), "wb");
  if (!file_) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  io_buffer_.resize(kIoBufferBytes);
  std::setvbuf(file_, io_buffer_.data(), _IOFBF, io_buffer_.size());
  written_ = 0;
  put(&kMagic, 4);
  put(&kVersion, 4);
  const uint64_t n_tensors = tensors_.size(), n_kv = kv_.size();
  put(&n_tensors, 8);
  put(&n_kv, 8);
  for (const auto& [key, value] : kv_) {
    put_string(key);
    const auto t = static_cast<uint32_t>(value.type);
    put(&t, 4);
    put_value(value);
  }
  for (const Info& t : tensors_) {
    put_string(t.name);
    const auto n_dims = static_cast<uint32_t>(t.ne.size());
    put(&n_dims, 4);
    for (int64_t d : t.ne) put(&d, 8);
    const auto type = static_cast<uint32_t>(t.type);
    put(&type, 4);
    put(&t.offset, 8);
  }
  pad_to_alignment();
  data_start_ = written_;
}

void GgufWriter::write_data(const void* data, uint64_t bytes) {
  if (!file_) throw std::logic_error("GgufWriter: write_data() before begin()");
  const auto* p = static_cast<const uint8_t*>(data);
  while (bytes > 0) {
    if (current_ >= tensors_.size())
      throw std::logic_error(path_ + ": more tensor data than declared");
    const Info& t = tensors_[current_];
    const uint64_t take = std::min(bytes, t.n_bytes - current_done_);
    put(p, take);
    p += take;
    bytes -= take;
    current_done_ += take;
    if (current_done_ == t.n_bytes) {
      ++current_;
      current_done_ = 0;
      if (current_ < tensors_.size()) pad_to_alignment();
    }
  }
}

void GgufWriter::finish() {
  if (!file_) throw std::logic_error("GgufWriter: finish() before begin()");
  if (current_ != tensors_.size()) {
    throw std::logic_error(path_ + ": tensor '" + tensors_[current_].name + "' got " +
                           std::to_string(current_done_) + " of its " +
                           std::to_string(tensors_[current_].n_bytes) + " bytes");
  }
  pad_to_alignment();
  const bool flushed = std::fflush(file_) == 0;
  const int flush_errno = errno;
  const bool closed = std::fclose(file_) == 0;
  file_ = nullptr;
  if (!flushed || !closed) {
    std::error_code ec;
    std::filesystem::remove(path_, ec);
    throw std::runtime_error(path_ +
                             ": write failed: " + std::strerror(flushed ? errno : flush_errno));
  }
}

void GgufWriter::close_and_remove() {
  std::fclose(file_);
  file_ = nullptr;
  std::error_code ec;  // best effort: the destructor must not throw
  std::filesystem::remove(path_, ec);
}

GgufWriter::~GgufWriter() {
  if (file_) close_and_remove();
}

}  // namespace tandem
