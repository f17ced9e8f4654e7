// Writes GGUF v3 files: metadata, tensor infos, then tensor data streamed in order. All tensor
// infos are declared before any data, so offsets are known up front and memory use stays at
// whatever the caller hands in (a row chunk), whatever the file size.
#pragma once

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "engine/gguf.h"

namespace tandem {

class GgufWriter {
 public:
  explicit GgufWriter(uint64_t alignment = 32) : alignment_(alignment) {}

  // Metadata, in the order added. Values keep their GGUF type (copy from a reader's GgufValue).
  void add(const std::string& key, const GgufValue& value);
  void add_string(const std::string& key, const std::string& value);
  void add_u32(const std::string& key, uint32_t value);
  void add_i32(const std::string& key, int32_t value);
  void add_f32(const std::string& key, float value);
  void add_bool(const std::string& key, bool value);

  // Declares a tensor (ne[0] innermost). Returns its index.
  size_t add_tensor(const std::string& name, GgmlType type, std::vector<int64_t> ne);
  uint64_t tensor_bytes(size_t index) const { return tensors_[index].n_bytes; }
  size_t n_tensors() const { return tensors_.size(); }

  // Opens `path` and writes header, metadata and tensor infos. Then append the data of each
  // tensor in declaration order with write_data (any number of calls per tensor).
  void begin(const std::string& path);
  void write_data(const void* data, uint64_t bytes);
  // Checks every tensor got exactly its bytes, pads, closes. Throws on any I/O error.
  void finish();
  ~GgufWriter();

 private:
  struct Info {
    std::string name;
    GgmlType type;
    std::vector<int64_t> ne;
    uint64_t n_bytes = 0, offset = 0;
  };
  void put(const void* data, uint64_t bytes);
  void put_string(const std::string& s);
  void put_value(const GgufValue& v);
  void pad_to_alignment();

  uint64_t alignment_;
  std::vector<std::pair<std::string, GgufValue>> kv_;
  std::vector<Info> tensors_;
  std::string path_;
  FILE* file_ = nullptr;
  uint64_t written_ = 0;      // bytes written to the file so far
  size_t current_ = 0;        // tensor receiving data
  uint64_t current_done_ = 0; // its bytes written so far
};

}  // namespace tandem
