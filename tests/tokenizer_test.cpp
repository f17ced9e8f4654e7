// The tokenizer against llama.cpp's test vectors (../shared/tokenizer): every string of every
// .inp file must tokenize to the ids of the matching .out line (no BOS/EOS, no special parsing).
#include <gtest/gtest.h>

#include <fstream>
#include <ostream>
#include <sstream>

#include "engine/gguf.h"
#include "engine/pretokenizer.h"
#include "engine/tokenizer.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

struct VectorFile {
  std::string vocab;  // GGUF in the tokenizer folder
  std::string vectors;  // .inp/.out stem
  bool lossless;        // decode(encode(s)) == s for every string
};

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::vector<std::string> split_inputs(const std::string& text) {
  const std::string sep = "\n__ggml_vocab_test__\n";
  std::vector<std::string> out;
  size_t start = 0, at;
  while ((at = text.find(sep, start)) != std::string::npos) {
    out.push_back(text.substr(start, at - start));
    start = at + sep.size();
  }
  return out;
}

std::vector<std::vector<int32_t>> read_ids(const std::string& path) {
  std::ifstream in(path);
  std::vector<std::vector<int32_t>> out;
  std::string line;
  while (std::getline(in, line)) {
    std::istringstream ss(line);
    std::vector<int32_t> ids;
    int32_t id;
    while (ss >> id) ids.push_back(id);
    out.push_back(ids);
  }
  return out;
}

void PrintTo(const VectorFile& v, std::ostream* os) { *os << v.vectors; }

class TokenizerVectors : public testing::TestWithParam<VectorFile> {};

TEST_P(TokenizerVectors, MatchesLlamaCpp) {
  TANDEM_REQUIRE_SHARED();
  const VectorFile& v = GetParam();
  const std::string dir = test::shared_path("tokenizer/");
  const auto file = GgufFile::open(dir + v.vocab);
  const auto tok = Tokenizer::from_gguf(*file);
  const auto inputs = split_inputs(read_file(dir + v.vectors + ".inp"));
  const auto expected = read_ids(dir + v.vectors + ".out");
  ASSERT_EQ(inputs.size(), expected.size()) << "vector files disagree in length";
  size_t n_ok = 0, n_roundtrip = 0;
  for (size_t i = 0; i < inputs.size(); ++i) {
    const auto ids = tok->encode(inputs[i], false, false);
    EXPECT_EQ(ids, expected[i]) << v.vectors << " string #" << i << ": '" << inputs[i] << "'";
    n_ok += ids == expected[i];
    const std::string back = tok->decode(ids);
    n_roundtrip += back == inputs[i];
    if (v.lossless) {
      EXPECT_EQ(back, inputs[i]) << "round trip of string #" << i;
    }
  }
  std::printf("[ tokenizer ] %s: %zu/%zu strings match, %zu/%zu round-trip\n", v.vectors.c_str(), n_ok,
              inputs.size(), n_roundtrip, inputs.size());
}

// Every vocabulary here round-trips: byte-level BPE covers all bytes, and SPM's byte fallback
// does too (decode drops exactly the one space the encoder put in front). The tiny models'
// 4096-token SPM vocabulary is lossy by design (no "▁" piece for most characters: a space
// before them comes back as the bytes of U+2581); it is not among these files.
INSTANTIATE_TEST_SUITE_P(
    Shared, TokenizerVectors,
    testing::Values(VectorFile{"ggml-vocab-llama-spm.gguf", "ggml-vocab-llama-spm.gguf", true},
                    VectorFile{"ggml-vocab-phi-3.gguf", "ggml-vocab-phi-3.gguf", true},
                    VectorFile{"ggml-vocab-gpt-2.gguf", "ggml-vocab-gpt-2.gguf", true},
                    VectorFile{"ggml-vocab-deepseek-llm.gguf", "ggml-vocab-deepseek-llm.gguf", true},
                    VectorFile{"ggml-vocab-deepseek-coder.gguf", "ggml-vocab-deepseek-coder.gguf", true},
                    VectorFile{"ggml-vocab-falcon.gguf", "ggml-vocab-falcon.gguf", true},
                    VectorFile{"ggml-vocab-starcoder.gguf", "ggml-vocab-starcoder.gguf", true},
                    VectorFile{"ggml-vocab-qwen3.gguf", "ggml-vocab-qwen3.gguf", true},
                    VectorFile{"ggml-vocab-qwen3.gguf", "ggml-vocab-qwen3b.gguf", true}),
    [](const testing::TestParamInfo<VectorFile>& param_info) {
      std::string n = param_info.param.vectors;
      for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return n;
    });

TEST(Tokenizer, ParsesSpecialTokensOnlyWhenAsked) {
  TANDEM_REQUIRE_SHARED();
  const auto file = GgufFile::open(test::shared_path("tokenizer/ggml-vocab-qwen3.gguf"));
  const auto tok = Tokenizer::from_gguf(*file);
  const auto with = tok->encode("<|im_start|>user\nhi<|im_end|>", false, true);
  ASSERT_GE(with.size(), 3u);
  EXPECT_EQ(tok->token_text(with.front()), "<|im_start|>");
  EXPECT_EQ(tok->token_text(with.back()), "<|im_end|>");
  EXPECT_TRUE(tok->is_end_of_generation(with.back()));
  EXPECT_TRUE(tok->is_control(with.front()));
  const auto without = tok->encode("<|im_start|>", false, false);
  EXPECT_GT(without.size(), 1u) << "control text must stay plain text without parse_special";
  EXPECT_EQ(tok->decode(with, true), "<|im_start|>user\nhi<|im_end|>");
  EXPECT_EQ(tok->decode(with, false), "user\nhi");
}

TEST(Tokenizer, SpmAddsBosAsTheMetadataSays) {
  TANDEM_REQUIRE_SHARED();
  const auto file = GgufFile::open(test::shared_path("tokenizer/ggml-vocab-llama-spm.gguf"));
  const auto tok = Tokenizer::from_gguf(*file);
  const auto ids = tok->encode("Hello world", true, false);
  ASSERT_FALSE(ids.empty());
  EXPECT_EQ(ids.front(), tok->bos());
  EXPECT_EQ(tok->decode(std::vector<int32_t>(ids.begin() + 1, ids.end())), "Hello world");
}

TEST(Tokenizer, StreamerHoldsBackSplitCharacters) {
  TANDEM_REQUIRE_SHARED();
  const auto file = GgufFile::open(test::shared_path("tokenizer/ggml-vocab-llama-spm.gguf"));
  const auto tok = Tokenizer::from_gguf(*file);
  // "😀" is not a piece of this vocabulary: it encodes as four byte tokens.
  const auto ids = tok->encode("\xF0\x9F\x98\x80", false, false);
  std::vector<int32_t> bytes;
  for (int32_t id : ids) {
    if (tok->token_to_piece(id).size() == 1 && static_cast<uint8_t>(tok->token_to_piece(id)[0]) >= 0x80) bytes.push_back(id);
  }
  ASSERT_EQ(bytes.size(), 4u);
  TextStreamer streamer(*tok);
  EXPECT_EQ(streamer.push(bytes[0]), "");
  EXPECT_EQ(streamer.push(bytes[1]), "");
  EXPECT_EQ(streamer.push(bytes[2]), "");
  EXPECT_EQ(streamer.push(bytes[3]), "\xF0\x9F\x98\x80");
  EXPECT_EQ(streamer.push(bytes[0]), "");
  EXPECT_EQ(streamer.flush(), "\xef\xbf\xbd");
}

TEST(Tokenizer, UnknownPretokenizerIsNamed) {
  try {
    Pretokenizer p("no-such-pre");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("'no-such-pre'"), std::string::npos) << e.what();
  }
}

TEST(Tokenizer, MalformedUtf8DoesNotBreakBpe) {
  TANDEM_REQUIRE_SHARED();
  const auto file = GgufFile::open(test::shared_path("tokenizer/ggml-vocab-qwen3.gguf"));
  const auto tok = Tokenizer::from_gguf(*file);
  const std::string bad = "ok Ã ÿþ end";
  const auto ids = tok->encode(bad, false, false);
  EXPECT_EQ(tok->decode(ids), bad);
}

}  // namespace
}  // namespace tandem
