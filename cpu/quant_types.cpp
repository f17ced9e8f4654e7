#include "cpu/quant_types.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <stdexcept>
#include <string>

namespace tandem {
namespace {

// Block sizes follow the ggml block structs: e.g. Q8_0 = f16 scale + 32 int8 = 34 bytes,
// Q4_K = 2 f16 + 12 scale bytes + 128 nibble bytes = 144, Q8_K = f32 + 256 int8 + 16 int16 = 292.
constexpr std::array<TypeTraits, 18> kTypes = {{
    {GgmlType::F32, "f32", 1, 4, true},
    {GgmlType::F16, "f16", 1, 2, true},
    {GgmlType::Q4_0, "q4_0", 32, 18, true},
    {GgmlType::Q4_1, "q4_1", 32, 20, true},
    {GgmlType::Q5_0, "q5_0", 32, 22, true},
    {GgmlType::Q5_1, "q5_1", 32, 24, true},
    {GgmlType::Q8_0, "q8_0", 32, 34, true},
    {GgmlType::Q8_1, "q8_1", 32, 36, false},
    {GgmlType::Q2_K, "q2_K", 256, 84, false},
    {GgmlType::Q3_K, "q3_K", 256, 110, false},
    {GgmlType::Q4_K, "q4_K", 256, 144, true},
    {GgmlType::Q5_K, "q5_K", 256, 176, true},
    {GgmlType::Q6_K, "q6_K", 256, 210, true},
    {GgmlType::Q8_K, "q8_K", 256, 292, false},
    {GgmlType::BF16, "bf16", 1, 2, true},
    {GgmlType::MXFP4, "mxfp4", 32, 17, true},
    {GgmlType::Q8_0_X16, "q8_0_x16", 32, 34, true},
    {GgmlType::Q4_K_X16, "q4_K_x16", 256, 144, true},
}};

std::string lower(std::string_view s) {
  std::string out(s);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

}  // namespace

std::optional<TypeTraits> type_traits(uint32_t type_id) {
  if (type_id >= kFirstMemoryLayoutId) return std::nullopt;
  for (const TypeTraits& t : kTypes) {
    if (static_cast<uint32_t>(t.type) == type_id) return t;
  }
  return std::nullopt;
}

const TypeTraits& traits(GgmlType type) {
  for (const TypeTraits& t : kTypes) {
    if (t.type == type) return t;
  }
  throw std::logic_error("unknown ggml type id " + std::to_string(static_cast<uint32_t>(type)));
}

std::string_view type_name(GgmlType type) { return traits(type).name; }

std::optional<GgmlType> parse_type_name(std::string_view name) {
  const std::string wanted = lower(name);
  for (const TypeTraits& t : kTypes) {
    if (static_cast<uint32_t>(t.type) >= kFirstMemoryLayoutId) continue;  // not a file type
    if (lower(t.name) == wanted) return t.type;
  }
  return std::nullopt;
}

}  // namespace tandem
