// GGUF reader: every reference file parses; corrupted files are rejected with a message that
// names the field and the byte offset, never a crash.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <vector>

#include "engine/gguf.h"
#include "engine/gguf_writer.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

// Read (anonymous huge-page memory) and Map give the same file: same metadata, same tensor
// bytes; the read copy starts on a 2 MiB boundary so it can be backed by huge pages.
TEST(GgufShared, ReadIntoMemoryEqualsTheMapping) {
  TANDEM_REQUIRE_SHARED();
  const std::string path = test::shared_path("models/tiny-qwen3moe-q8_0.gguf");
  const auto mapped = GgufFile::open(path, GgufMemory::Map);
  const auto read = GgufFile::open(path, GgufMemory::Read);
  ASSERT_EQ(read->memory(), GgufMemory::Read);
  EXPECT_EQ(mapped->memory(), GgufMemory::Map);
  // The data section starts on a cache line, within the first 64 bytes of a huge page.
  const auto data = reinterpret_cast<uintptr_t>(read->mapping() + read->data_offset());
  EXPECT_EQ(data % 64, 0u);
  EXPECT_LT(reinterpret_cast<uintptr_t>(read->mapping()) % (uintptr_t{2} << 20), 64u);
  ASSERT_EQ(read->file_size(), mapped->file_size());
  EXPECT_EQ(std::memcmp(read->mapping(), mapped->mapping(), read->file_size()), 0);
  EXPECT_EQ(read->metadata_keys(), mapped->metadata_keys());
  ASSERT_EQ(read->tensors().size(), mapped->tensors().size());
  for (size_t i = 0; i < read->tensors().size(); ++i) {
    const TensorView &a = read->tensors()[i], &b = mapped->tensors()[i];
    EXPECT_EQ(a.name, b.name);
    EXPECT_EQ(a.offset, b.offset);
    EXPECT_EQ(a.data - read->mapping(), b.data - mapped->mapping()) << a.name;
  }
}

// Only a read file opened writable can be rewritten, and only until it is sealed.
TEST(GgufShared, WritableUntilSealed) {
  TANDEM_REQUIRE_SHARED();
  const std::string path = test::shared_path("models/tiny-qwen3moe-q8_0.gguf");
  const auto sealed = GgufFile::open(path, GgufMemory::Read);
  const TensorView& t = sealed->tensors().front();
  EXPECT_THROW(sealed->writable_data(t), std::logic_error);
  const auto mapped = GgufFile::open(path, GgufMemory::Map, true);
  EXPECT_THROW(mapped->writable_data(mapped->tensors().front()), std::logic_error);
  const auto open = GgufFile::open(path, GgufMemory::Read, true);
  const TensorView& w = open->tensors().front();
  uint8_t* bytes = open->writable_data(w);
  EXPECT_EQ(bytes, w.data);
  bytes[0] ^= 1;  // writable: no fault
  bytes[0] ^= 1;
  open->seal();
  EXPECT_THROW(open->writable_data(w), std::logic_error);
  EXPECT_EQ(std::memcmp(w.data, sealed->tensors().front().data, w.n_bytes), 0);
}

TEST(Gguf, FilesLargerThanTheAvailableMemoryAreMappedNotRead) {
  constexpr uint64_t kGiB = uint64_t{1} << 30;
  EXPECT_EQ(choose_gguf_memory(GgufMemory::Read, 6 * kGiB, 20 * kGiB), GgufMemory::Read);
  EXPECT_EQ(choose_gguf_memory(GgufMemory::Read, 30 * kGiB, 20 * kGiB), GgufMemory::Map);
  EXPECT_EQ(choose_gguf_memory(GgufMemory::Read, 30 * kGiB, 0), GgufMemory::Read);  // unknown
  EXPECT_EQ(choose_gguf_memory(GgufMemory::Map, 1, 20 * kGiB), GgufMemory::Map);
  EXPECT_GT(available_memory_bytes(), 0u);  // Linux reports MemAvailable
}

TEST(Gguf, ReadIntoMemoryRejectsWhatTheMappingRejects) {
  const fs::path path = fs::temp_directory_path() / "tandem_gguf_read_bad.gguf";
  {
    std::ofstream f(path, std::ios::binary);
    f << "GGUX" << std::string(40, '\0');
  }
  for (GgufMemory memory : {GgufMemory::Map, GgufMemory::Read}) {
    try {
      GgufFile::open(path.string(), memory);
      ADD_FAILURE() << "accepted a file with a bad magic";
    } catch (const GgufError& e) {
      EXPECT_NE(std::string(e.what()).find("magic"), std::string::npos) << e.what();
    }
  }
  fs::remove(path);
}

TEST(GgufShared, EveryReferenceFileParses) {
  TANDEM_REQUIRE_SHARED();
  int n = 0;
  for (const char* dir : {"models", "tokenizer"}) {
    for (const auto& entry : fs::directory_iterator(test::shared_path(dir))) {
      if (entry.path().extension() != ".gguf") continue;
      const auto f = GgufFile::open(entry.path().string());
      EXPECT_EQ(f->version(), 3u) << entry.path();
      EXPECT_TRUE(f->has("general.architecture")) << entry.path();
      EXPECT_FALSE(f->get_string_array("tokenizer.ggml.tokens").empty()) << entry.path();
      for (const TensorView& t : f->tensors()) {
        EXPECT_LE(t.offset + t.n_bytes, f->file_size()) << t.name;
        EXPECT_EQ(t.offset % f->alignment(), 0u) << t.name;
      }
      if (std::string(dir) == "tokenizer") {
        EXPECT_TRUE(f->tensors().empty()) << entry.path();
      }
      ++n;
    }
  }
  EXPECT_GE(n, 18);
}

// FORMAT.md's table: every model file has its architecture's tensor count and shapes.
TEST(GgufShared, EveryModelMatchesTheReferenceTable) {
  TANDEM_REQUIRE_SHARED();
  struct Arch {
    const char* prefix;
    const char* key;
    size_t n_tensors;
    int64_t n_head_kv;
  };
  const Arch archs[] = {{"tiny-qwen3moe", "qwen3moe", 39, 2},
                        {"tiny-qwen2moe", "qwen2moe", 54, 2},
                        {"tiny-mixtral", "llama", 33, 2},
                        {"tiny-olmoe", "olmoe", 39, 4}};
  int n = 0;
  for (const auto& entry : fs::directory_iterator(test::shared_path("models"))) {
    if (entry.path().extension() != ".gguf") continue;
    const std::string file = entry.path().filename().string();
    const Arch* arch = nullptr;
    for (const Arch& a : archs) {
      if (file.rfind(a.prefix, 0) == 0) arch = &a;
    }
    ASSERT_NE(arch, nullptr) << "unexpected reference model " << file;
    const auto f = GgufFile::open(entry.path().string());
    const std::string p = std::string(arch->key) + ".";
    EXPECT_EQ(f->architecture(), arch->key) << file;
    EXPECT_EQ(f->tensors().size(), arch->n_tensors) << file;
    EXPECT_EQ(f->get_int(p + "block_count"), 3) << file;
    EXPECT_EQ(f->get_int(p + "embedding_length"), 256) << file;
    EXPECT_EQ(f->get_int(p + "attention.head_count"), 4) << file;
    EXPECT_EQ(f->get_int(p + "attention.head_count_kv"), arch->n_head_kv) << file;
    EXPECT_EQ(f->get_int(p + "expert_count"), 8) << file;
    EXPECT_EQ(f->get_int(p + "expert_used_count"), 2) << file;
    EXPECT_EQ(f->get_string_array("tokenizer.ggml.tokens").size(), 4096u) << file;
    EXPECT_EQ(f->find_tensor("token_embd.weight")->shape_string(), "[256, 4096]") << file;
    EXPECT_EQ(f->find_tensor("blk.2.ffn_down_exps.weight")->shape_string(), "[256, 256, 8]")
        << file;
    EXPECT_EQ(f->find_tensor("blk.1.attn_k.weight")->shape_string(),
              "[256, " + std::to_string(arch->n_head_kv * 64) + "]")
        << file;
    EXPECT_EQ(f->find_tensor("blk.0.ffn_gate_inp.weight")->type, GgmlType::F32) << file;
    ++n;
  }
  EXPECT_GE(n, 10);
}

TEST(GgufShared, ArchitectureSpecificTensors) {
  TANDEM_REQUIRE_SHARED();
  const auto q3 = GgufFile::open(test::shared_path("models/tiny-qwen3moe-q4_k_m.gguf"));
  EXPECT_EQ(q3->find_tensor("blk.0.ffn_gate_exps.weight")->shape_string(), "[256, 256, 8]");
  EXPECT_EQ(q3->find_tensor("blk.0.attn_q_norm.weight")->shape_string(), "[64]");
  EXPECT_EQ(q3->find_tensor("blk.0.attn_k.weight")->type, GgmlType::Q8_0);
  EXPECT_EQ(q3->find_tensor("output.weight")->type, GgmlType::Q6_K);
  const auto q2 = GgufFile::open(test::shared_path("models/tiny-qwen2moe-f16.gguf"));
  EXPECT_EQ(q2->find_tensor("blk.2.ffn_down_shexp.weight")->shape_string(), "[512, 256]");
  EXPECT_EQ(q2->find_tensor("blk.0.ffn_gate_inp_shexp.weight")->shape_string(), "[256]");
  EXPECT_EQ(q2->find_tensor("blk.0.attn_q.bias")->shape_string(), "[256]");
  EXPECT_EQ(q2->get_int("qwen2moe.expert_shared_feed_forward_length"), 512);
  const auto mx = GgufFile::open(test::shared_path("models/tiny-mixtral-f16.gguf"));
  EXPECT_EQ(mx->find_tensor("blk.0.attn_q_norm.weight"), nullptr);
  EXPECT_NEAR(mx->get_float("llama.attention.layer_norm_rms_epsilon"), 1e-5, 1e-9);
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
  const fs::path p =
      fs::temp_directory_path() / ("tandem-gguf-" + std::to_string(::getpid()) + ".gguf");
  {
    std::ofstream f(p, std::ios::binary);
    f.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
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

TEST(GgufCorrupt, TheUncorruptedFileParses) {
  EXPECT_EQ(open_error(build(Spec{})), "");
}

struct Corruption {
  const char* name;
  Spec spec;
  const char* expected;  // substring of the message naming the field or the problem
  uint64_t offset;       // byte offset the message must give
};

void PrintTo(const Corruption& c, std::ostream* os) {
  *os << c.name;
}

class GgufCorrupt : public testing::TestWithParam<Corruption> {};

TEST_P(GgufCorrupt, IsRejectedNamingFieldAndOffset) {
  const std::string msg = open_error(build(GetParam().spec));
  ASSERT_FALSE(msg.empty()) << "accepted a corrupted file";
  EXPECT_NE(msg.find(GetParam().expected), std::string::npos) << msg;
  EXPECT_NE(msg.find("at byte offset " + std::to_string(GetParam().offset) + ":"),
            std::string::npos)
      << msg;
  EXPECT_NE(msg.find("tandem-gguf-"), std::string::npos) << "the message names the file: " << msg;
  EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
}

Spec with(void (*f)(Spec&)) {
  Spec s;
  f(s);
  return s;
}

// Byte layout of build(Spec{}): header 0..24; key #0 length at 24, its type at 52, its string
// value at 56; key 'numbers' at 72, its element type at 91, length at 95, elements at 103;
// tensor 'w' info at 115: n_dims 124, ne[0] 128, ne[1] 136, type 144, offset 148; data at 160.
// With extra_alignment, general.alignment's type sits at 140.
INSTANTIATE_TEST_SUITE_P(
    Cases, GgufCorrupt,
    testing::Values(
        Corruption{"TruncatedHeader", with([](Spec& s) { s.truncate_to = 10; }), "24-byte header",
                   0},
        Corruption{"TruncatedInKey", with([](Spec& s) { s.truncate_to = 50; }), "metadata key #0",
                   24},
        Corruption{"TruncatedInValue", with([](Spec& s) { s.truncate_to = 60; }),
                   "metadata 'general.architecture'", 56},
        Corruption{"TruncatedInArray", with([](Spec& s) { s.truncate_to = 100; }),
                   "metadata 'numbers' (array length)", 95},
        Corruption{"TruncatedInArrayElements", with([](Spec& s) { s.truncate_to = 109; }),
                   "count 3 cannot fit", 95},
        Corruption{"TruncatedInTensorInfo", with([](Spec& s) { s.truncate_to = 135; }),
                   "tensor 'w' ne[0]", 128},
        Corruption{"TruncatedData", with([](Spec& s) {
                     s.ne0 = 64;
                     s.ne1 = 64;
                   }),
                   "runs past the end", 115},
        Corruption{"BadVersion", with([](Spec& s) { s.version = 7; }), "unsupported version 7", 4},
        Corruption{"HugeTensorCount", with([](Spec& s) { s.n_tensors = uint64_t{1} << 60; }),
                   "tensor count", 8},
        Corruption{"HugeMetadataCount", with([](Spec& s) { s.n_kv = uint64_t{1} << 61; }),
                   "metadata count", 16},
        Corruption{"HugeArrayLength", with([](Spec& s) { s.array_len = uint64_t{1} << 62; }),
                   "array length", 95},
        Corruption{"BadValueType", with([](Spec& s) { s.arch_type = 99; }), "unknown value type 99",
                   52},
        Corruption{"BadTensorType", with([](Spec& s) { s.tensor_type = 77; }),
                   "unknown tensor type id 77", 144},
        Corruption{"ZeroDims", with([](Spec& s) { s.n_dims = 0; }), "n_dims 0", 124},
        Corruption{"FiveDims", with([](Spec& s) { s.n_dims = 5; }), "n_dims 5", 124},
        Corruption{"MisalignedOffset", with([](Spec& s) { s.offset = 3; }),
                   "not a multiple of the alignment", 148},
        Corruption{"OffsetPastEnd", with([](Spec& s) { s.offset = uint64_t{1} << 40; }),
                   "runs past the end", 115},
        Corruption{"BadAlignment", with([](Spec& s) {
                     s.extra_alignment = true;
                     s.alignment = 24;
                   }),
                   "power of two", 140},
        Corruption{"ZeroAlignment", with([](Spec& s) {
                     s.extra_alignment = true;
                     s.alignment = 0;
                   }),
                   "power of two", 140},
        Corruption{"RowNotWholeBlocks", with([](Spec& s) {
                     s.tensor_type = 8;
                     s.ne0 = 33;
                   }),
                   "block size 32", 128},
        Corruption{"DimensionTooLarge", with([](Spec& s) { s.ne0 = uint64_t{1} << 50; }),
                   "too large", 128},
        Corruption{"ElementCountOverflow", with([](Spec& s) {
                     s.ne0 = uint64_t{1} << 39;
                     s.ne1 = uint64_t{1} << 39;
                   }),
                   "ne[1]", 136},
        Corruption{"ZeroDimension", with([](Spec& s) { s.ne1 = 0; }), "ne[1]", 136},
        Corruption{"BoolNotZeroOrOne", with([](Spec& s) { s.arch_type = kBool; }),
                   "neither 0 nor 1", 56}),
    [](const testing::TestParamInfo<Corruption>& param_info) {
      return std::string(param_info.param.name);
    });

TEST(GgufCorruptBytes, BadMagic) {
  std::vector<uint8_t> b = build(Spec{});
  b[0] = 'X';
  const std::string msg = open_error(b);
  EXPECT_NE(msg.find("not a GGUF file"), std::string::npos) << msg;
  EXPECT_NE(msg.find("magic at byte offset 0"), std::string::npos) << msg;
}

TEST(GgufCorruptBytes, HugeStringLength) {
  std::vector<uint8_t> b = build(Spec{});
  const uint64_t huge = uint64_t{1} << 50;
  std::memcpy(b.data() + 24, &huge, 8);  // length of the first key
  const std::string msg = open_error(b);
  EXPECT_NE(msg.find("metadata key #0 at byte offset 24: string length"), std::string::npos) << msg;
  std::memcpy(b.data() + 56, &huge, 8);  // length of the first value, key intact again
  const uint64_t key_len = 20;
  std::memcpy(b.data() + 24, &key_len, 8);
  EXPECT_NE(open_error(b).find("'general.architecture' at byte offset 56: string length"),
            std::string::npos)
      << open_error(b);
}

// Two keys written with distinct names, then one renamed to the other in the bytes.
TEST(GgufCorruptBytes, DuplicateKey) {
  Bytes b;
  b.u32(kMagic).u32(3).u64(0).u64(2);
  b.str("general.name").u32(kStr).str("a");
  b.str("general.namf").u32(kStr).str("b");
  b.data[57 + 8 + 11] = 'e';  // the second key (length at 57)'s last byte
  const std::string msg = open_error(b.data);
  EXPECT_NE(msg.find("metadata 'general.name' at byte offset 77: duplicate key"), std::string::npos)
      << msg;
}

TEST(GgufCorruptBytes, DuplicateTensorName) {
  Bytes b;
  b.u32(kMagic).u32(3).u64(2).u64(0);
  for (uint64_t offset : {0, 32}) b.str("w").u32(1).u64(8).u32(0).u64(offset);
  b.pad(32);
  const std::vector<float> w(16, 1.0f);
  b.raw(w.data(), 64);
  const std::string msg = open_error(b.data);
  EXPECT_NE(msg.find("tensor 'w' at byte offset 57: duplicate tensor name"), std::string::npos)
      << msg;
}

// A file written by GgufWriter, cut at every length short of its last tensor's end: each cut
// is rejected with a GgufError (never a crash or an accepted file).
TEST(GgufCorruptBytes, EveryTruncationOfAWrittenFileIsRejected) {
  GgufWriter w;
  w.add_string("general.architecture", "qwen3moe");
  GgufValue arr;
  arr.type = GgufValueType::ARRAY;
  arr.array_type = GgufValueType::INT32;
  arr.array_ints = {1, 2, 3, 4};
  arr.array_size = 4;
  w.add("ids", arr);
  w.add_tensor("a", GgmlType::Q8_0, {32, 2});
  w.add_tensor("b", GgmlType::F32, {5});
  const fs::path p =
      fs::temp_directory_path() / ("tandem-cut-" + std::to_string(::getpid()) + ".gguf");
  w.begin(p.string());
  const std::vector<uint8_t> data(w.tensor_bytes(0) + w.tensor_bytes(1), 0);
  w.write_data(data.data(), data.size());
  w.finish();
  const uint64_t end = GgufFile::open(p.string())->tensors().back().offset + 20;
  std::ifstream in(p, std::ios::binary);
  const std::vector<uint8_t> whole((std::istreambuf_iterator<char>(in)), {});
  fs::remove(p);
  for (uint64_t n = 0; n < end; ++n) {
    const std::string msg =
        open_error(std::vector<uint8_t>(whole.begin(), whole.begin() + static_cast<long>(n)));
    EXPECT_NE(msg.find("invalid GGUF"), std::string::npos) << "cut at " << n << ": " << msg;
  }
  EXPECT_EQ(open_error(std::vector<uint8_t>(whole.begin(), whole.begin() + static_cast<long>(end))),
            "");
}

}  // namespace
}  // namespace tandem
