// Writes GGUF v3 files: header, metadata, tensor infos, then tensor data streamed in order.
// All tensor infos are declared before any data, so offsets are known up front and memory use
// stays at whatever the caller hands in per call (a row chunk), whatever the file size.
//
// Usage: add metadata and tensors, begin(path), then write_data() each tensor's bytes in
// declaration order (any number of calls per tensor; padding between tensors is inserted
// automatically), finish(). A writer destroyed after begin() but before a successful finish()
// removes its partial file.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <unordered_set>
#include <vector>

#include "engine/gguf.h"

namespace tandem {

class GgufWriter {
 public:
  // `alignment` of tensor data (a power of two). A "general.alignment" metadata entry
  // overrides it, as readers take the alignment from there; when the alignment is not the
  // default 32 and no such entry was added, begin() adds it.
  explicit GgufWriter(uint64_t alignment = 32);

  // Metadata, in the order added. Any value type, arrays (also nested) included; copy values
  // from a reader's GgufValue or build them with the helpers below. Throws
  // std::invalid_argument on an empty or duplicate key or an invalid general.alignment.
  void add(const std::string& key, const GgufValue& value);
  void add_string(const std::string& key, const std::string& value);
  void add_u32(const std::string& key, uint32_t value);
  void add_i32(const std::string& key, int32_t value);
  void add_u64(const std::string& key, uint64_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);

  // Declares a tensor (ne[0] innermost, 1 to 4 dimensions, ne[0] a whole number of blocks).
  // Returns its index. Throws std::invalid_argument naming the tensor when the shape is bad
  // or the name is empty, longer than 63 bytes (llama.cpp's limit) or already declared.
  size_t add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne);
  uint64_t tensor_bytes(size_t index) const { return tensors_[index].n_bytes; }
  size_t n_tensors() const { return tensors_.size(); }
  uint64_t alignment() const { return alignment_; }

  // Opens `path` and writes header, metadata and tensor infos.
  void begin(const std::string& path);
  // Offset of a tensor's data from the start of the file; valid after begin().
  uint64_t tensor_file_offset(size_t index) const { return data_start_ + tensors_[index].offset; }
  // Appends tensor data in declaration order; a call may span tensor boundaries.
  void write_data(const void* data, uint64_t bytes);
  // Checks every tensor got exactly its bytes, pads, closes. Throws on any I/O error.
  void finish();
  ~GgufWriter();
  GgufWriter(const GgufWriter&) = delete;
  GgufWriter& operator=(const GgufWriter&) = delete;

 private:
  struct Info {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t n_bytes = 0, offset = 0;  // offset from the start of the data section
  };
  void put(const void* data, uint64_t bytes);
  void put_string(const std::string& s);
  void put_value(const GgufValue& v);
  void pad_to_alignment();
  void close_and_remove();

  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::unordered_set<std::string> keys_, tensor_names_;
  std::vector<Info> tensors_;
  std::string path_;
  FILE* file_ = nullptr;
  std::vector<char> io_buffer_;
  uint64_t written_ = 0;       // bytes written to the file so far
  uint64_t data_start_ = 0;    // file offset of the data section
  size_t current_ = 0;         // tensor receiving data
  uint64_t current_done_ = 0;  // its bytes written so far
};

}  // namespace tandem
