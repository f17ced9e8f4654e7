// GGUF reader: every reference file parses; corrupted files are rejected with a message that
// names the field and the byte offset, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

TEST(GgufShared, EveryReferenceFileParses) {
  TANDEM_REQUIRE_SHARED();
  int n = 0;
  for (const char* dir : {"models", "tokenizer"}) {
    for (const auto& entry : fs::directory_iterator(test::shared_path(dir))) {
      if (entry.path().extension() != ".gguf") continue;
      const auto f = GgufFile::open(entry.path().string());
      EXPECT_EQ(f->version(), 3u) << entry.path();
      EXPECT_TRUE(f->has("general.architecture")) << entry.path();
      EXPECT_TRUE(f->has("tokenizer.ggml.tokens")) << entry.path();
      for (const TensorView& t : f->tensors()) {
        EXPECT_LE(t.offset + t.n_bytes, f->file_size()) << t.name;
        EXPECT_EQ(t.offset % f->alignment(), 0u) << t.name;
      }
      ++n;
    }
  }
  EXPECT_GE(n, 18);
}

TEST(GgufShared, ShapesMatchTheReferenceTable) {
  TANDEM_REQUIRE_SHARED();
  const auto q3 = GgufFile::open(test::shared_path("models/tiny-qwen3moe-q4_k_m.gguf"));
  EXPECT_EQ(q3->architecture(), "qwen3moe");
  EXPECT_EQ(q3->tensors().size(), 39u);
  EXPECT_EQ(q3->find_tensor("blk.0.ffn_gate_exps.weight")->shape_string(), "[256, 256, 8]");
  EXPECT_EQ(q3->find_tensor("blk.0.attn_k.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(q3->find_tensor("output.weight")->type, GgmlType::Q6_K);
  const auto q2 = GgufFile::open(test::shared_path("models/tiny-qwen2moe-f16.gguf"));
  EXPECT_EQ(q2->find_tensor("blk.2.ffn_down_shexp.weight")->shape_string(), "[512, 256]");
  EXPECT_EQ(q2->get_int("qwen2moe.expert_shared_feed_forward_length"), 512);
  const auto mx = GgufFile::open(test::shared_path("models/tiny-mixtral-f16.gguf"));
  EXPECT_EQ(mx->architecture(), "llama");
  EXPECT_EQ(mx->get_int("llama.expert_count"), 8);
  const auto ol = GgufFile::open(test::shared_path("models/tiny-olmoe-f16.gguf"));
  EXPECT_EQ(ol->find_tensor("blk.0.attn_q_norm.weight")->shape_string(), "[256]");
  EXPECT_NEAR(ol->get_float("olmoe.rope.freq_base"), 1e4, 1e-6);
}

// Builds GGUF bytes field by field, so each corruption is one changed field.
class Bytes {
 public:
  Bytes& u32(uint32_t v) { return raw(&v, 4); }
  Bytes& u64(uint64_t v) { return raw(&v, 8); }
  Bytes& str(const std::string& s) { return u64(s.size()).raw(s.data(), s.size()); }
  Bytes& raw(const void* p, size_t n) {
    data.insert(data.end(), static_cast<const uint8_t*>(p), static_cast<const uint8_t*>(p) + n);
    return *this;
  }
  Bytes& pad(size_t alignment) {
    while (data.size() % alignment) data.push_back(0);
    return *this;
  }
  std::vector<uint8_t> data;
};

constexpr uint32_t kMagic = 0x46554747;
constexpr uint32_t kU32 = 4, kStr = 8, kArr = 9, kBool = 7;

struct Spec {
  uint32_t version = 3;
  uint64_t n_tensors = 1, n_kv = 2;
  uint32_t arch_type = kStr;
  uint64_t array_len = 3;
  uint32_t tensor_type = 0;  // F32
  uint32_t n_dims = 2;
  uint64_t ne0 = 4, ne1 = 2;
  uint64_t offset = 0;
  bool extra_alignment = false;
  uint32_t alignment = 32;
  size_t truncate_to = 0;  // 0: whole file
};

std::vector<uint8_t> build(const Spec& s) {
  Bytes b;
  b.u32(kMagic).u32(s.version).u64(s.n_tensors).u64(s.n_kv + (s.extra_alignment ? 1 : 0));
  b.str("general.architecture").u32(s.arch_type).str("qwen3moe");
  b.str("numbers").u32(kArr).u32(kU32).u64(s.array_len).u32(1).u32(2).u32(3);
  if (s.extra_alignment) b.str("general.alignment").u32(kU32).u32(s.alignment);
  b.str("w").u32(s.n_dims);
  for (uint32_t d = 0; d < std::min<uint32_t>(s.n_dims, 4); ++d) b.u64(d == 0 ? s.ne0 : s.ne1);
  b.u32(s.tensor_type).u64(s.offset);
  b.pad(32);
  const std::vector<float> w(s.ne0 * s.ne1 < 64 ? s.ne0 * s.ne1 : 8, 1.0f);
  b.raw(w.data(), w.size() * 4);
  if (s.truncate_to) b.data.resize(s.truncate_to);
  return b.data;
}

std::string open_error(const std::vector<uint8_t>& bytes) {
  const fs::path p = fs::temp_directory_path() / ("tandem-gguf-" + std::to_string(::getpid()) + ".gguf");
  {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  }
  std::string message;
  try {
    GgufFile::open(p.string());
  } catch (const GgufError& e) {
    message = e.what();
  }
  fs::remove(p);
  return message;
}

TEST(GgufCorrupt, TheUncorruptedFileParses) { EXPECT_EQ(open_error(build(Spec{})), ""); }

struct Corruption {
  const char* name;
  Spec spec;
  const char* expected;  // substring of the message
};

void PrintTo(const Corruption& c, std::ostream* os) { *os << c.name; }

class GgufCorrupt : public testing::TestWithParam<Corruption> {};

TEST_P(GgufCorrupt, IsRejectedNamingFieldAndOffset) {
  const std::string msg = open_error(build(GetParam().spec));
  ASSERT_FALSE(msg.empty()) << "accepted a corrupted file";
  EXPECT_NE(msg.find(GetParam().expected), std::string::npos) << msg;
  EXPECT_TRUE(msg.find("byte offset") != std::string::npos || msg.find("bytes") != std::string::npos) << msg;
  EXPECT_NE(msg.find("tandem-gguf-"), std::string::npos) << "the message names the file: " << msg;
}

Spec with(void (*f)(Spec&)) {
  Spec s;
  f(s);
  return s;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, GgufCorrupt,
    testing::Values(
        Corruption{"TruncatedHeader", with([](Spec& s) { s.truncate_to = 10; }), "24-byte header"},
        Corruption{"TruncatedInKey", with([](Spec& s) { s.truncate_to = 50; }), "metadata key #0"},
        Corruption{"TruncatedInArray", with([](Spec& s) { s.truncate_to = 100; }), "metadata 'numbers'"},
        Corruption{"TruncatedInTensorInfo", with([](Spec& s) { s.truncate_to = 135; }), "tensor 'w'"},
        Corruption{"TruncatedData", with([](Spec& s) { s.ne0 = 64; s.ne1 = 64; }), "runs past the end"},
        Corruption{"BadVersion", with([](Spec& s) { s.version = 7; }), "unsupported version 7"},
        Corruption{"HugeTensorCount", with([](Spec& s) { s.n_tensors = uint64_t{1} << 60; }), "tensor count"},
        Corruption{"HugeMetadataCount", with([](Spec& s) { s.n_kv = uint64_t{1} << 61; }), "metadata count"},
        Corruption{"HugeArrayLength", with([](Spec& s) { s.array_len = uint64_t{1} << 62; }), "array length"},
        Corruption{"BadValueType", with([](Spec& s) { s.arch_type = 99; }), "unknown value type 99"},
        Corruption{"BadTensorType", with([](Spec& s) { s.tensor_type = 77; }), "unknown tensor type id 77"},
        Corruption{"ZeroDims", with([](Spec& s) { s.n_dims = 0; }), "n_dims 0"},
        Corruption{"FiveDims", with([](Spec& s) { s.n_dims = 5; }), "n_dims 5"},
        Corruption{"MisalignedOffset", with([](Spec& s) { s.offset = 3; }), "not a multiple of the alignment"},
        Corruption{"OffsetPastEnd", with([](Spec& s) { s.offset = uint64_t{1} << 40; }), "runs past the end"},
        Corruption{"BadAlignment", with([](Spec& s) { s.extra_alignment = true; s.alignment = 24; }), "power of two"},
        Corruption{"RowNotWholeBlocks", with([](Spec& s) { s.tensor_type = 8; s.ne0 = 33; }), "block size 32"},
        Corruption{"DimensionOverflow", with([](Spec& s) { s.ne0 = uint64_t{1} << 50; }), "too large"},
        Corruption{"BoolNotZeroOrOne", with([](Spec& s) { s.arch_type = kBool; }), "neither 0 nor 1"}),
    [](const testing::TestParamInfo<Corruption>& param_info) { return std::string(param_info.param.name); });

TEST(GgufCorruptExtra, BadMagicAndStringLength) {
  std::vector<uint8_t> b = build(Spec{});
  b[0] = 'X';
  EXPECT_NE(open_error(b).find("not a GGUF file"), std::string::npos);
  b = build(Spec{});
  const uint64_t huge = uint64_t{1} << 50;
  std::memcpy(b.data() + 24, &huge, 8);  // length of the first key
  EXPECT_NE(open_error(b).find("string length"), std::string::npos) << open_error(b);
}

TEST(GgufCorruptExtra, DuplicateKeyAndTensor) {
  GgufWriter w;
  w.add_string("general.architecture", "x");
  w.add_string("general.architecture", "y");
  const fs::path p = fs::temp_directory_path() / ("tandem-dup-" + std::to_string(::getpid()) + ".gguf");
  w.begin(p.string());
  w.finish();
  try {
    GgufFile::open(p.string());
    ADD_FAILURE() << "duplicate key accepted";
  } catch (const GgufError& e) {
    EXPECT_NE(std::string(e.what()).find("duplicate key"), std::string::npos) << e.what();
  }
  fs::remove(p);
}

TEST(GgufWriterRoundTrip, EveryValueTypeSurvives) {
  GgufWriter w;
  w.add_string("s", "héllo");
  w.add_u32("u", 4000000000u);
  w.add_i32("i", -5);
  w.add_f32("f", 0.25f);
  w.add_bool("b", true);
  GgufValue arr;
  arr.type = GgufValueType::ARRAY;
  arr.array_type = GgufValueType::STRING;
  arr.array_strings = {"a", "", "ccc"};
  arr.array_size = 3;
  w.add("strings", arr);
  const size_t t = w.add_tensor("x", GgmlType::Q8_0, {64, 3});
  const fs::path p = fs::temp_directory_path() / ("tandem-rt-" + std::to_string(::getpid()) + ".gguf");
  w.begin(p.string());
  const std::vector<uint8_t> data(w.tensor_bytes(t), 7);
  w.write_data(data.data(), 50);
  w.write_data(data.data() + 50, data.size() - 50);
  w.finish();
  const auto f = GgufFile::open(p.string());
  EXPECT_EQ(f->get_string("s"), "héllo");
  EXPECT_EQ(f->get_int("u"), 4000000000);
  EXPECT_EQ(f->get_int("i"), -5);
  EXPECT_FLOAT_EQ(static_cast<float>(f->get_float("f")), 0.25f);
  EXPECT_TRUE(f->get_bool("b", false));
  EXPECT_EQ(f->get_string_array("strings"), (std::vector<std::string>{"a", "", "ccc"}));
  ASSERT_NE(f->find_tensor("x"), nullptr);
  EXPECT_EQ(f->find_tensor("x")->n_bytes, 3u * 68u);
  EXPECT_EQ(f->find_tensor("x")->data[0], 7);
  fs::remove(p);
}

}  // namespace
}  // namespace tandem
