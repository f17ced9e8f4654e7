// GgufWriter: every metadata value type and tensor data survive a round trip through the
// reader; alignment (general.alignment or the constructor's) is honoured; misuse is rejected
// and never leaves a half-written file behind.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <stdexcept>
#include <vector>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("tandem-writer-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

GgufValue scalar(GgufValueType type, int64_t i, double f = 0) {
  GgufValue v;
  v.type = type;
  v.int_value = i;
  v.float_value = f;
  v.bool_value = i != 0;
  return v;
}

GgufValue int_array(GgufValueType elem, std::vector<int64_t> values) {
  GgufValue v;
  v.type = GgufValueType::ARRAY;
  v.array_type = elem;
  v.array_size = values.size();
  v.array_ints = std::move(values);
  return v;
}

GgufValue float_array(GgufValueType elem, std::vector<double> values) {
  GgufValue v;
  v.type = GgufValueType::ARRAY;
  v.array_type = elem;
  v.array_size = values.size();
  v.array_floats = std::move(values);
  return v;
}

TEST(GgufWriter, EveryScalarTypeRoundTrips) {
  GgufWriter w;
  w.add("u8", scalar(GgufValueType::UINT8, 250));
  w.add("i8", scalar(GgufValueType::INT8, -100));
  w.add("u16", scalar(GgufValueType::UINT16, 65000));
  w.add("i16", scalar(GgufValueType::INT16, -32000));
  w.add_u32("u32", 4000000000u);
  w.add_i32("i32", -2000000000);
  w.add_u64("u64", std::numeric_limits<uint64_t>::max() - 5);
  w.add("i64", scalar(GgufValueType::INT64, std::numeric_limits<int64_t>::min() + 7));
  w.add_f32("f32", 0.1f);
  w.add("f64", scalar(GgufValueType::FLOAT64, 0, 0.1));
  w.add_bool("yes", true);
  w.add_bool("no", false);
  w.add_string("s", "h\xc3\xa9llo");
  w.add_string("empty", "");
  const std::string path = temp_path("scalars.gguf");
  w.begin(path);
  w.finish();
  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->metadata_keys().size(), 14u);
  EXPECT_EQ(f->get_int("u8"), 250);
  EXPECT_EQ(f->get_int("i8"), -100);
  EXPECT_EQ(f->get_int("u16"), 65000);
  EXPECT_EQ(f->get_int("i16"), -32000);
  EXPECT_EQ(f->get_int("u32"), 4000000000);
  EXPECT_EQ(f->get_int("i32"), -2000000000);
  EXPECT_EQ(static_cast<uint64_t>(f->get_int("u64")), std::numeric_limits<uint64_t>::max() - 5);
  EXPECT_EQ(f->get_int("i64"), std::numeric_limits<int64_t>::min() + 7);
  EXPECT_EQ(f->get_float("f32"), static_cast<double>(0.1f));
  EXPECT_EQ(f->get_float("f64"), 0.1);
  EXPECT_TRUE(f->get_bool("yes", false));
  EXPECT_FALSE(f->get_bool("no", true));
  EXPECT_EQ(f->get_string("s"), "h\xc3\xa9llo");
  EXPECT_EQ(f->get_string("empty"), "");
  for (const char* key : {"u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64"}) {
    EXPECT_EQ(gguf_value_type_name(f->find(key)->type), key);
  }
  fs::remove(path);
}

TEST(GgufWriter, EveryArrayTypeRoundTrips) {
  GgufWriter w;
  const std::vector<std::pair<GgufValueType, std::vector<int64_t>>> ints = {
      {GgufValueType::UINT8, {0, 255}},        {GgufValueType::INT8, {-128, 127}},
      {GgufValueType::UINT16, {0, 65535}},     {GgufValueType::INT16, {-32768, 5}},
      {GgufValueType::UINT32, {4294967295}},   {GgufValueType::INT32, {-1, 0, 1}},
      {GgufValueType::UINT64, {1, 1LL << 62}}, {GgufValueType::INT64, {-(1LL << 62)}},
      {GgufValueType::BOOL, {1, 0, 1}},        {GgufValueType::INT32, {}}};
  for (size_t i = 0; i < ints.size(); ++i)
    w.add("ints" + std::to_string(i), int_array(ints[i].first, ints[i].second));
  w.add("f32s", float_array(GgufValueType::FLOAT32, {0.5, -2.25}));
  w.add("f64s", float_array(GgufValueType::FLOAT64, {0.1, 1e300}));
  GgufValue strings;
  strings.type = GgufValueType::ARRAY;
  strings.array_type = GgufValueType::STRING;
  strings.array_strings = {"a", "", "ccc"};
  w.add("strings", strings);
  GgufValue nested;  // [[1, 2], [3]] as arrays of u16
  nested.type = GgufValueType::ARRAY;
  nested.array_type = GgufValueType::ARRAY;
  nested.array_items = {int_array(GgufValueType::UINT16, {1, 2}),
                        int_array(GgufValueType::UINT16, {3})};
  w.add("nested", nested);
  const std::string path = temp_path("arrays.gguf");
  w.begin(path);
  w.finish();
  const auto f = GgufFile::open(path);
  for (size_t i = 0; i < ints.size(); ++i) {
    const GgufValue* v = f->find("ints" + std::to_string(i));
    ASSERT_NE(v, nullptr);
    EXPECT_EQ(v->array_type, ints[i].first) << i;
    EXPECT_EQ(v->array_ints, ints[i].second) << i;
  }
  EXPECT_EQ(f->get_float_array("f32s"), (std::vector<double>{0.5, -2.25}));
  EXPECT_EQ(f->get_float_array("f64s"), (std::vector<double>{0.1, 1e300}));
  EXPECT_EQ(f->get_string_array("strings"), (std::vector<std::string>{"a", "", "ccc"}));
  const GgufValue* n = f->find("nested");
  ASSERT_EQ(n->array_items.size(), 2u);
  EXPECT_EQ(n->array_items[0].array_ints, (std::vector<int64_t>{1, 2}));
  EXPECT_EQ(n->array_items[1].array_ints, (std::vector<int64_t>{3}));
  fs::remove(path);
}

// Writes three tensors of odd sizes with bytes 1, 2, 3..., in chunks of `chunk` bytes that
// cross tensor boundaries; returns the path.
std::string write_three(GgufWriter& w, const std::string& name, uint64_t chunk) {
  w.add_string("general.architecture", "test");
  w.add_tensor("a", GgmlType::F32, {5});
  w.add_tensor("b", GgmlType::Q8_0, {32, 3});
  w.add_tensor("c", GgmlType::F16, {3, 1, 1, 2});
  const std::string path = temp_path(name);
  w.begin(path);
  std::vector<uint8_t> all;
  for (size_t t = 0; t < w.n_tensors(); ++t)
    all.insert(all.end(), w.tensor_bytes(t), static_cast<uint8_t>(t + 1));
  for (uint64_t i = 0; i < all.size(); i += chunk)
    w.write_data(all.data() + i, std::min<uint64_t>(chunk, all.size() - i));
  w.finish();
  return path;
}

void expect_three(const GgufFile& f, const GgufWriter& w, uint64_t alignment) {
  EXPECT_EQ(f.alignment(), alignment);
  ASSERT_EQ(f.tensors().size(), 3u);
  EXPECT_EQ(f.find_tensor("b")->shape_string(), "[32, 3]");
  EXPECT_EQ(f.find_tensor("c")->shape_string(), "[3, 1, 1, 2]");
  for (size_t t = 0; t < 3; ++t) {
    const TensorView& v = f.tensors()[t];
    EXPECT_EQ(v.offset % alignment, 0u) << v.name;
    EXPECT_EQ(v.offset, w.tensor_file_offset(t)) << v.name;
    EXPECT_EQ(v.n_bytes, w.tensor_bytes(t)) << v.name;
    for (uint64_t i = 0; i < v.n_bytes; ++i) ASSERT_EQ(v.data[i], t + 1) << v.name << " byte " << i;
  }
  EXPECT_EQ(f.file_size() % alignment, 0u);
}

TEST(GgufWriter, DataStreamsAcrossTensorBoundariesWithPadding) {
  for (uint64_t chunk : {1, 7, 1000}) {
    GgufWriter w;
    const std::string path = write_three(w, "stream.gguf", chunk);
    expect_three(*GgufFile::open(path), w, 32);
    fs::remove(path);
  }
}

TEST(GgufWriter, GeneralAlignmentIsHonouredEvenWhenAddedLast) {
  GgufWriter w;
  w.add_u32("general.alignment", 256);
  const std::string path = write_three(w, "align.gguf", 64);
  expect_three(*GgufFile::open(path), w, 256);
  fs::remove(path);
}

TEST(GgufWriter, ConstructorAlignmentIsWrittenToTheFile) {
  GgufWriter w(64);
  const std::string path = write_three(w, "ctor-align.gguf", 64);
  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->get_int("general.alignment"), 64);
  expect_three(*f, w, 64);
  fs::remove(path);
}

TEST(GgufWriter, RejectsBadDeclarations) {
  EXPECT_THROW(GgufWriter(24), std::invalid_argument);
  GgufWriter w;
  EXPECT_THROW(w.add_u32("general.alignment", 48), std::invalid_argument);
  EXPECT_THROW(w.add_string("general.alignment", "32"), std::invalid_argument);
  EXPECT_THROW(w.add_u32("", 1), std::invalid_argument);
  w.add_u32("k", 1);
  EXPECT_THROW(w.add_u32("k", 2), std::invalid_argument);
  GgufValue mixed = int_array(GgufValueType::FLOAT32, {1, 2});  // floats kept as ints
  EXPECT_THROW(w.add("mixed", mixed), std::invalid_argument);
  EXPECT_THROW(w.add("bools", int_array(GgufValueType::BOOL, {0, 2})), std::invalid_argument);
  GgufValue nested = int_array(GgufValueType::ARRAY, {});
  nested.array_items = {scalar(GgufValueType::UINT8, 1)};
  EXPECT_THROW(w.add("nested", nested), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {1, 1, 1, 1, 1}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {4, 0}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {1LL << 40, 1LL << 40}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("t", GgmlType::Q4_K, {128}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor(std::string(64, 'x'), GgmlType::F32, {4}), std::invalid_argument);
  EXPECT_THROW(w.add_tensor("", GgmlType::F32, {4}), std::invalid_argument);
  w.add_tensor("t", GgmlType::F32, {4});
  EXPECT_THROW(w.add_tensor("t", GgmlType::F32, {4}), std::invalid_argument);
  EXPECT_THROW(w.write_data("x", 1), std::logic_error);
}

TEST(GgufWriter, WrongDataAmountsThrowAndLeaveNoFile) {
  const std::string path = temp_path("short.gguf");
  {
    GgufWriter w;
    w.add_tensor("t", GgmlType::F32, {4});
    w.begin(path);
    const std::vector<uint8_t> data(20, 0);
    w.write_data(data.data(), 12);
    EXPECT_THROW(w.finish(), std::logic_error);
    EXPECT_THROW(w.write_data(data.data(), 8), std::logic_error);  // 16 + 4 > 16
    EXPECT_THROW(w.add_u32("late", 1), std::logic_error);
  }
  EXPECT_FALSE(fs::exists(path)) << "a writer that never finished removes its file";
}

TEST(GgufWriter, EmptyFileWithoutTensorsIsValid) {
  GgufWriter w;
  w.add_string("general.architecture", "none");
  const std::string path = temp_path("empty.gguf");
  w.begin(path);
  w.finish();
  const auto f = GgufFile::open(path);
  EXPECT_EQ(f->tensors().size(), 0u);
  EXPECT_EQ(f->architecture(), "none");
  fs::remove(path);
}

}  // namespace
}  // namespace tandem
