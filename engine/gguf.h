// GGUF files (versions 2 and 3): memory-mapped, fully validated on open.
//
// Every count, length, offset and size read from the file is checked against the file size
// with overflow-safe arithmetic before use. A malformed file throws GgufError whose message
// names the file, the field and the byte offset; nothing is read out of bounds.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "cpu/quant_types.h"

namespace tandem {

class GgufError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Value type ids as stored in the file.
enum class GgufValueType : uint32_t {
  UINT8 = 0,
  INT8 = 1,
  UINT16 = 2,
  INT16 = 3,
  UINT32 = 4,
  INT32 = 5,
  FLOAT32 = 6,
  BOOL = 7,
  STRING = 8,
  ARRAY = 9,
  UINT64 = 10,
  INT64 = 11,
  FLOAT64 = 12,
};

std::string_view gguf_value_type_name(GgufValueType type);

// One metadata value. Integers of every width are held in `int_value` (uint64 values above
// INT64_MAX keep their bit pattern), floats in `float_value`. An array keeps its element type
// and its elements in the vector matching that type; nested arrays go to `array_items`.
struct GgufValue {
  GgufValueType type = GgufValueType::UINT8;
  int64_t int_value = 0;
  double float_value = 0.0;
  bool bool_value = false;
  std::string string_value;

  GgufValueType array_type = GgufValueType::UINT8;
  std::vector<int64_t> array_ints;       // integer and bool arrays
  std::vector<double> array_floats;      // float arrays
  std::vector<std::string> array_strings;
  std::vector<GgufValue> array_items;    // arrays of arrays
  uint64_t array_size = 0;

  bool is_integer() const;
  bool is_float() const;
  bool is_array() const { return type == GgufValueType::ARRAY; }
  // Short human-readable rendering (arrays are summarised).
  std::string to_string() const;
};

// A tensor inside the mapping. ne[0] is the innermost (contiguous) dimension, as in ggml.
struct TensorView {
  std::string name;
  GgmlType type = GgmlType::F32;
  int n_dims = 0;
  int64_t ne[4] = {1, 1, 1, 1};
  const uint8_t* data = nullptr;
  uint64_t offset = 0;   // from the start of the file
  uint64_t n_bytes = 0;

  int64_t n_elements() const { return ne[0] * ne[1] * ne[2] * ne[3]; }
  // Bytes of one row of ne[0] elements.
  int64_t row_stride() const { return tandem::row_bytes(type, ne[0]); }
  std::string shape_string() const;  // "[2048, 768, 64]"
};

// Where the file's bytes live once opened.
//  Map:  a read-only mapping of the file (nothing read up front; pages come from the page cache).
//  Read: the file read into anonymous memory advised for transparent huge pages. Decode
//        streams the weights once per token, and from 2 MiB pages it streams them faster than
//        from the page cache's scattered 4 KiB pages (README, Performance, has the numbers).
//        Costs one read of the file at start-up; resident memory is the file size either way.
enum class GgufMemory { Map, Read };

// Read when asked to and the file fits in the memory the system says is available (free plus
// reclaimable cache); otherwise Map, which pages weights in and out instead of running out of
// memory. available_bytes 0 means unknown (Read stays Read).
GgufMemory choose_gguf_memory(GgufMemory wanted, uint64_t file_bytes, uint64_t available_bytes);

// MemAvailable from /proc/meminfo in bytes, 0 when it cannot be read.
uint64_t available_memory_bytes();

class GgufFile {
 public:
  // Opens (maps or reads) and validates the file; throws GgufError naming what is wrong.
  // A file read into memory stays writable until seal() when `writable` (weights rearranged at
  // load, see Model::load); otherwise it is sealed here.
  static std::unique_ptr<GgufFile> open(const std::string& path,
                                        GgufMemory memory = GgufMemory::Map,
                                        bool writable = false);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint64_t file_size() const { return size_; }
  uint64_t alignment() const { return alignment_; }
  uint64_t data_offset() const { return data_offset_; }
  const uint8_t* mapping() const { return base_; }
  GgufMemory memory() const { return memory_; }  // how the bytes are held (see choose_gguf_memory)

  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  // Keys in file order (for printing).
  const std::vector<std::string>& metadata_keys() const { return metadata_order_; }
  const GgufValue* find(std::string_view key) const;
  bool has(std::string_view key) const { return find(key) != nullptr; }

  // Typed getters. The plain forms throw GgufError when the key is missing or has the wrong
  // type; the forms with a fallback return it when the key is missing (wrong type still throws).
  int64_t get_int(std::string_view key) const;
  int64_t get_int(std::string_view key, int64_t fallback) const;
  double get_float(std::string_view key) const;  // accepts integer values too
  double get_float(std::string_view key, double fallback) const;
  bool get_bool(std::string_view key, bool fallback) const;
  std::string get_string(std::string_view key) const;
  std::string get_string(std::string_view key, std::string_view fallback) const;
  const std::vector<std::string>& get_string_array(std::string_view key) const;
  const std::vector<int64_t>& get_int_array(std::string_view key) const;
  const std::vector<double>& get_float_array(std::string_view key) const;

  std::string architecture() const { return get_string("general.architecture"); }

  const std::vector<TensorView>& tensors() const { return tensors_; }
  const TensorView* find_tensor(std::string_view name) const;

  // The bytes of `t` to rewrite in place: only for a Read file opened writable, before seal().
  uint8_t* writable_data(const TensorView& t);
  // Ends the rewriting: writable_data throws from now on. Idempotent. The pages are not made
  // read-only: on this project's virtual machines the first read of every page after an
  // mprotect(PROT_READ) of the written copy ran ~7x slower (4.1-4.3 GB/s vs 30 GB/s on one
  // thread), which cost a decode benchmark's first repetition most of its speed.
  void seal();

 private:
  GgufFile() = default;
  void parse();
  void read_into_memory();

  std::string path_;
  int fd_ = -1;
  const uint8_t* base_ = nullptr;
  uint64_t size_ = 0;
  GgufMemory memory_ = GgufMemory::Map;
  void* region_ = nullptr;  // the whole mapping (file or anonymous), for munmap
  bool sealed_ = true;
  uint64_t region_size_ = 0;
  uint32_t version_ = 0;
  uint64_t alignment_ = 32;
  uint64_t data_offset_ = 0;
  std::map<std::string, GgufValue> metadata_;
  std::vector<std::string> metadata_order_;
  std::vector<TensorView> tensors_;
  std::map<std::string, size_t, std::less<>> tensor_index_;
};

}  // namespace tandem
