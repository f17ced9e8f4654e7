// Tensor element types of the GGUF format: ids, block geometry and names.
// This is the one table every other part of Tandem consults for type facts.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace tandem {

// Values are the on-disk ggml type ids, except Tandem's in-memory layouts (ids from
// kFirstMemoryLayoutId), which no file holds.
enum class GgmlType : uint32_t {
  F32 = 0,
  F16 = 1,
  Q4_0 = 2,
  Q4_1 = 3,
  Q5_0 = 6,
  Q5_1 = 7,
  Q8_0 = 8,
  Q8_1 = 9,
  Q2_K = 10,
  Q3_K = 11,
  Q4_K = 12,
  Q5_K = 13,
  Q6_K = 14,
  Q8_K = 15,
  BF16 = 30,
  MXFP4 = 39,
  // Q8_0 and Q4_K rows rearranged at load in groups of 16 rows (cpu/interleave.h): the same
  // bytes, interleaved 4 bytes at a time so that the CPU kernels read 16 rows as one stream.
  Q8_0_X16 = 1008,
  Q4_K_X16 = 1012,
};

inline constexpr uint32_t kFirstMemoryLayoutId = 1000;

struct TypeTraits {
  GgmlType type;
  std::string_view name;  // lower-case, as llama.cpp prints it ("q8_0", "bf16")
  int64_t block_elems;    // elements per block (1 for plain floats)
  int64_t block_bytes;    // bytes per block
  bool supported;         // Tandem can dequantize and compute with it
};

// Traits of a known file type id, or nullopt for an id Tandem does not know (memory layout ids
// included: a file that names one is invalid).
std::optional<TypeTraits> type_traits(uint32_t type_id);
// Traits of a known type (throws std::logic_error for an unknown enum value).
const TypeTraits& traits(GgmlType type);
std::string_view type_name(GgmlType type);
// Parses a file type name: "q8_0", "Q4_K", "bf16" ...; nullopt when unknown.
std::optional<GgmlType> parse_type_name(std::string_view name);

// Bytes of a row of n_elems elements; n_elems must be a multiple of the block size.
inline int64_t row_bytes(GgmlType type, int64_t n_elems) {
  const TypeTraits& t = traits(type);
  return n_elems / t.block_elems * t.block_bytes;
}

// n_rows rows of n_cols elements of `type`; row r starts at data + r * row_stride bytes.
struct MatrixRef {
  GgmlType type;
  const void* data;
  int64_t n_rows;
  int64_t n_cols;
  int64_t row_stride;
};

}  // namespace tandem
