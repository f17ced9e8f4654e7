#include "engine/gguf_writer.h"

#include <cerrno>
#include <cstring>
#include <stdexcept>

namespace tandem {
namespace {

GgufValue scalar(GgufValueType type) {
  GgufValue v;
  v.type = type;
  return v;
}

}  // namespace

void GgufWriter::add(const std::string& key, const GgufValue& value) { kv_.emplace_back(key, value); }

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
  if (ne.empty() || ne.size() > 4) throw std::invalid_argument("tensor '" + name + "' needs 1 to 4 dimensions");
  int64_t n = 1;
  for (int64_t d : ne) n *= d;
  const TypeTraits& t = traits(type);
  if (ne[0] % t.block_elems != 0) {
    throw std::invalid_argument("tensor '" + name + "': row length " + std::to_string(ne[0]) +
                                " is not a multiple of the " + std::string(t.name) + " block size " +
                                std::to_string(t.block_elems));
  }
  Info info{name, type, std::move(ne), static_cast<uint64_t>(n / t.block_elems * t.block_bytes), 0};
  uint64_t offset = 0;
  if (!tensors_.empty()) {
    const Info& prev = tensors_.back();
    offset = (prev.offset + prev.n_bytes + alignment_ - 1) / alignment_ * alignment_;
  }
  info.offset = offset;
  tensors_.push_back(std::move(info));
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
      case GgufValueType::UINT8: case GgufValueType::INT8: case GgufValueType::BOOL: { const auto b = static_cast<uint8_t>(x); put(&b, 1); break; }
      case GgufValueType::UINT16: case GgufValueType::INT16: { const auto h = static_cast<uint16_t>(x); put(&h, 2); break; }
      case GgufValueType::UINT32: case GgufValueType::INT32: { const auto w = static_cast<uint32_t>(x); put(&w, 4); break; }
      default: put(&x, 8); break;
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
  if (v.type != GgufValueType::ARRAY) return put_int(v.type, v.type == GgufValueType::BOOL ? v.bool_value : v.int_value);
  const auto elem = static_cast<uint32_t>(v.array_type);
  put(&elem, 4);
  uint64_t n = 0;
  if (v.array_type == GgufValueType::STRING) n = v.array_strings.size();
  else if (v.array_type == GgufValueType::ARRAY) n = v.array_items.size();
  else if (v.array_type == GgufValueType::FLOAT32 || v.array_type == GgufValueType::FLOAT64) n = v.array_floats.size();
  else n = v.array_ints.size();
  put(&n, 8);
  for (uint64_t i = 0; i < n; ++i) {
    if (v.array_type == GgufValueType::STRING) put_string(v.array_strings[i]);
    else if (v.array_type == GgufValueType::ARRAY) put_value(v.array_items[i]);
    else if (v.array_type == GgufValueType::FLOAT32 || v.array_type == GgufValueType::FLOAT64) put_float(v.array_type, v.array_floats[i]);
    else put_int(v.array_type, v.array_ints[i]);
  }
}

void GgufWriter::pad_to_alignment() {
  static const char zeros[256] = {};
  const uint64_t pad = (alignment_ - written_ % alignment_) % alignment_;
  put(zeros, pad);
}

void GgufWriter::begin(const std::string& path) {
  path_ = path;
  file_ = std::fopen(path.c_str(), "wb");
  if (!file_) throw std::runtime_error(path + ": cannot create: " + std::strerror(errno));
  const uint32_t magic = 0x46554747, version = 3;
  put(&magic, 4);
  put(&version, 4);
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
}

void GgufWriter::write_data(const void* data, uint64_t bytes) {
  const auto* p = static_cast<const uint8_t*>(data);
  while (bytes > 0) {
    if (current_ >= tensors_.size()) throw std::logic_error(path_ + ": more tensor data than declared");
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
  if (current_ != tensors_.size()) {
    throw std::logic_error(path_ + ": tensor '" + tensors_[current_].name + "' got " + std::to_string(current_done_) +
                           " of its " + std::to_string(tensors_[current_].n_bytes) + " bytes");
  }
  pad_to_alignment();
  const bool ok = std::fflush(file_) == 0;
  std::fclose(file_);
  file_ = nullptr;
  if (!ok) throw std::runtime_error(path_ + ": write failed: " + std::strerror(errno));
}

GgufWriter::~GgufWriter() {
  if (file_) std::fclose(file_);
}

}  // namespace tandem
