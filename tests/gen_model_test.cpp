// gen-model: files have the layout of the reference models (keys, order, names, shapes, types),
// load through the engine's checked binder, are byte-identical for a seed whatever the thread
// count, hold N(0, 0.02^2) weights in every type; the Q4_K_M mix gives each tensor llama.cpp's
// type; the vocabulary is cut or padded; the CLI reports bad input clearly.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <set>
#include <span>
#include <tuple>

#include "cpu/quant.h"
#include "engine/engine.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "tests/test_support.h"
#include "tools/gen_model.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("tandem-gen-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

GenModelOptions options(const std::string& arch, GgmlType type, uint64_t seed,
                        const std::string& name) {
  GenModelOptions o;
  o.arch = arch;
  o.type = type;
  o.seed = seed;
  o.output_path = temp_path(name);
  return o;
}

std::string generate(const std::string& arch, GgmlType type, uint64_t seed,
                     const std::string& name) {
  const GenModelOptions o = options(arch, type, seed, name);
  generate_model(o);
  return o.output_path;
}

class GenModelArchType : public testing::TestWithParam<std::tuple<std::string, GgmlType>> {};

TEST_P(GenModelArchType, LoadsWithTheExpectedTensors) {
  const auto [arch, type] = GetParam();
  const std::string path = generate(arch, type, 7, arch + ".gguf");
  const auto model = Model::load(path);  // checks every tensor's name, type and shape
  const ModelSpec& s = model->spec();
  EXPECT_EQ(s.arch, arch == "mixtral" ? "llama" : arch);
  EXPECT_EQ(s.n_layer, 3);
  EXPECT_EQ(s.n_embd, 256);
  EXPECT_EQ(s.n_expert, 8);
  EXPECT_EQ(s.n_expert_used, 2);
  EXPECT_EQ(s.n_vocab, 4096);
  EXPECT_EQ(s.n_ff_shared, arch == "qwen2moe" ? 512 : 0);
  EXPECT_EQ(s.qk_norm, arch == "qwen3moe" ? QkNorm::PerHead
                       : arch == "olmoe"  ? QkNorm::Full
                                          : QkNorm::None);
  EXPECT_EQ(model->layers()[0].gate_exps.type, type);
  EXPECT_EQ(model->layers()[0].router.type, GgmlType::F32);
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(
    Archs, GenModelArchType,
    testing::Combine(testing::Values("qwen3moe", "qwen2moe", "mixtral", "olmoe"),
                     testing::Values(GgmlType::Q8_0, GgmlType::Q4_K, GgmlType::BF16)),
    [](const auto& param_info) {
      return std::get<0>(param_info.param) + "_" +
             std::string(type_name(std::get<1>(param_info.param)));
    });

// Same keys in the same order with the same values (but general.name), same tensors in the
// same order with the same types and shapes, same size as llama.cpp's gguf-py wrote.
class GenModelReference : public testing::TestWithParam<std::string> {};

TEST_P(GenModelReference, HasTheReferenceModelsLayout) {
  TANDEM_REQUIRE_SHARED();
  const std::string arch = GetParam();
  const auto ref = GgufFile::open(test::shared_path("models/tiny-" + arch + "-f16.gguf"));
  const std::string path = generate(arch, GgmlType::F16, 5, arch + "-ref.gguf");
  const auto gen = GgufFile::open(path);
  EXPECT_EQ(gen->metadata_keys(), ref->metadata_keys());
  for (const std::string& key : ref->metadata_keys()) {
    if (key == "general.name") continue;
    const GgufValue& a = *gen->find(key);
    const GgufValue& b = *ref->find(key);
    EXPECT_EQ(a.type, b.type) << key;
    EXPECT_EQ(a.to_string(), b.to_string()) << key;
    EXPECT_EQ(a.array_strings, b.array_strings) << key;
    EXPECT_EQ(a.array_ints, b.array_ints) << key;
    EXPECT_EQ(a.array_floats, b.array_floats) << key;
  }
  ASSERT_EQ(gen->tensors().size(), ref->tensors().size());
  for (size_t i = 0; i < ref->tensors().size(); ++i) {
    const TensorView& a = gen->tensors()[i];
    const TensorView& b = ref->tensors()[i];
    EXPECT_EQ(a.name, b.name) << i;
    EXPECT_EQ(a.type, b.type) << b.name;
    EXPECT_EQ(a.shape_string(), b.shape_string()) << b.name;
    EXPECT_EQ(a.offset, b.offset) << b.name;
  }
  EXPECT_EQ(gen->file_size(), ref->file_size());
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Archs, GenModelReference,
                         testing::Values("qwen3moe", "qwen2moe", "mixtral", "olmoe"));

TEST(GenModel, SameSeedSameBytesWhateverTheThreadsOtherSeedOtherBytes) {
  GenModelOptions o = options("qwen2moe", GgmlType::Q4_K, 11, "a.gguf");
  o.n_threads = 1;
  generate_model(o);
  GenModelOptions o2 = options("qwen2moe", GgmlType::Q4_K, 11, "b.gguf");
  o2.n_threads = 3;
  generate_model(o2);
  const std::string c = generate("qwen2moe", GgmlType::Q4_K, 12, "c.gguf");
  EXPECT_TRUE(slurp(o.output_path) == slurp(o2.output_path));
  EXPECT_FALSE(slurp(o.output_path) == slurp(c));
  // Another seed changes every weight tensor, not just a few bytes.
  const auto fa = GgufFile::open(o.output_path), fc = GgufFile::open(c);
  for (const TensorView& t : fa->tensors()) {
    const bool same = std::equal(t.data, t.data + t.n_bytes, fc->find_tensor(t.name)->data);
    const bool ones = t.name.find("norm") != std::string::npos;
    EXPECT_EQ(same, ones) << t.name;
  }
  for (const auto& p : {o.output_path, o2.output_path, c}) fs::remove(p);
}

struct Stats {
  double mean, sd;
};

Stats stats(const TensorView& t) {
  std::vector<float> v(static_cast<size_t>(t.n_elements()));
  dequantize_row(t.type, t.data, v.data(), t.n_elements());
  double sum = 0, sq = 0;
  for (float x : v) {
    sum += x;
    sq += static_cast<double>(x) * x;
  }
  const double mean = sum / v.size();
  return {mean, std::sqrt(sq / v.size() - mean * mean)};
}

TEST(GenModel, WeightsAreNormalWithStd002InEveryType) {
  for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0,
                        GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q6_K}) {
    const std::string path = generate("qwen2moe", type, 3, "stats.gguf");
    const auto f = GgufFile::open(path);
    for (const char* name :
         {"blk.1.ffn_up_exps.weight", "token_embd.weight", "blk.2.ffn_down_shexp.weight"}) {
      const TensorView* t = f->find_tensor(name);
      ASSERT_NE(t, nullptr);
      EXPECT_EQ(t->type, type);
      const Stats s = stats(*t);
      EXPECT_NEAR(s.mean, 0.0, 3e-4) << type_name(type) << " " << name;
      EXPECT_NEAR(s.sd, 0.02, 0.002) << type_name(type) << " " << name;
    }
    for (const char* name :
         {"blk.0.ffn_gate_inp.weight", "blk.0.attn_q.bias"}) {  // f32 whatever the type
      const TensorView* t = f->find_tensor(name);
      EXPECT_EQ(t->type, GgmlType::F32) << name;
      EXPECT_NEAR(stats(*t).sd, 0.02, 0.003) << name;
    }
    const TensorView* norm = f->find_tensor("blk.1.ffn_norm.weight");
    const Stats n = stats(*norm);
    EXPECT_EQ(n.mean, 1.0);
    EXPECT_EQ(n.sd, 0.0);
    fs::remove(path);
  }
}

TEST(GenModel, VocabularyIsCutOrPadded) {
  const auto vocab = GgufFile::open(default_vocab_path());
  const std::vector<std::string>& src = vocab->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(src.size(), 32000u);
  GenModelOptions o = options("mixtral", GgmlType::Q4_0, 1, "vocab.gguf");
  o.n_layer = 1;
  o.n_vocab = 32010;
  generate_model(o);
  const auto f = GgufFile::open(o.output_path);
  const auto& tokens = f->get_string_array("tokenizer.ggml.tokens");
  ASSERT_EQ(tokens.size(), 32010u);
  EXPECT_TRUE(std::equal(src.begin(), src.end(), tokens.begin()));
  EXPECT_EQ(tokens[32000], "[PAD32000]");
  EXPECT_EQ(tokens[32009], "[PAD32009]");
  EXPECT_EQ(f->get_int_array("tokenizer.ggml.token_type")[32005], 5);  // UNUSED
  EXPECT_EQ(f->get_float_array("tokenizer.ggml.scores").size(), 32010u);
  EXPECT_EQ(f->find_tensor("output.weight")->shape_string(), "[256, 32010]");
  EXPECT_EQ(f->get_int("llama.vocab_size"), 32010);
  fs::remove(o.output_path);

  o.n_vocab = 300;
  generate_model(o);
  const auto g = GgufFile::open(o.output_path);
  EXPECT_EQ(g->get_string_array("tokenizer.ggml.tokens"),
            std::vector<std::string>(src.begin(), src.begin() + 300));
  EXPECT_EQ(g->get_int("tokenizer.ggml.eos_token_id"), 2);
  fs::remove(o.output_path);
}

TEST(GenModel, BenchPresetShapes) {
  GenModelOptions o = options("qwen3moe", GgmlType::Q4_0, 1, "bench.gguf");
  o.preset = "bench";
  o.n_layer = 1;  // the shapes of one layer, with fewer experts and tokens to stay fast
  o.n_expert = 8;
  o.n_vocab = 512;
  generate_model(o);
  const auto f = GgufFile::open(o.output_path);
  EXPECT_EQ(f->get_int("qwen3moe.embedding_length"), 2048);
  EXPECT_EQ(f->get_int("qwen3moe.expert_used_count"), 8);
  EXPECT_EQ(f->get_int("qwen3moe.attention.head_count"), 32);
  EXPECT_EQ(f->get_int("qwen3moe.attention.head_count_kv"), 4);
  EXPECT_EQ(f->find_tensor("blk.0.attn_q.weight")->shape_string(), "[2048, 4096]");
  EXPECT_EQ(f->find_tensor("blk.0.attn_k.weight")->shape_string(), "[2048, 512]");
  EXPECT_EQ(f->find_tensor("blk.0.attn_k_norm.weight")->shape_string(), "[128]");
  EXPECT_EQ(f->find_tensor("blk.0.ffn_down_exps.weight")->shape_string(), "[768, 2048, 8]");
  fs::remove(o.output_path);
}

// The Q4_K_M rules of llama.cpp's quantizer, written out for 16 layers: Q6_K for the output,
// and for attn_v and ffn_down in layers 0-1, 14-15 and every third from 4; the rest Q4_K.
TEST(GenModel, Q4KMixGivesEachTensorLlamaCppsType) {
  GenModelOptions o = options("qwen2moe", GgmlType::Q8_0, 3, "q4km.gguf");
  o.mix = GenModelOptions::Mix::Q4_K_M;
  o.n_layer = 16;
  o.n_expert = 4;  // not 8: 8-expert models follow other rules (next test)
  generate_model(o);
  const auto f = GgufFile::open(o.output_path);
  EXPECT_EQ(f->get_int("general.file_type"), 15);  // LLAMA_FTYPE_MOSTLY_Q4_K_M
  EXPECT_NE(f->get_string("general.name").find("q4_k_m"), std::string::npos);
  const auto type_of = [&](const std::string& name) { return f->find_tensor(name)->type; };
  EXPECT_EQ(type_of("output.weight"), GgmlType::Q6_K);
  EXPECT_EQ(type_of("token_embd.weight"), GgmlType::Q4_K);
  const std::set<int> more_bits = {0, 1, 4, 7, 10, 13, 14, 15};
  for (int il = 0; il < 16; ++il) {
    const std::string b = "blk." + std::to_string(il) + ".";
    const GgmlType wide = more_bits.count(il) ? GgmlType::Q6_K : GgmlType::Q4_K;
    EXPECT_EQ(type_of(b + "attn_v.weight"), wide) << il;
    EXPECT_EQ(type_of(b + "ffn_down_exps.weight"), wide) << il;
    EXPECT_EQ(type_of(b + "ffn_down_shexp.weight"), wide) << il;
    for (const char* role : {"attn_q", "attn_k", "attn_output", "ffn_gate_exps", "ffn_up_exps",
                             "ffn_gate_shexp", "ffn_up_shexp"})
      EXPECT_EQ(type_of(b + role + ".weight"), GgmlType::Q4_K) << b << role;
    for (const char* role : {"attn_norm", "ffn_norm", "ffn_gate_inp", "ffn_gate_inp_shexp"})
      EXPECT_EQ(type_of(b + role + ".weight"), GgmlType::F32) << b << role;
    EXPECT_EQ(type_of(b + "attn_q.bias"), GgmlType::F32);
  }
  // The mixed file loads and runs: finite logits after a prompt and a decoded token.
  const auto model = Model::load(o.output_path);
  EngineOptions eo;
  eo.n_ctx = 16;
  Engine engine(*model, eo);
  std::vector<float> logits;
  const BatchEntry prompt[] = {{1, 0, 0, false}, {2, 1, 0, true}};
  engine.forward(prompt, logits);
  const BatchEntry next{3, 2, 0, true};
  engine.forward(std::span(&next, 1), logits);
  ASSERT_EQ(logits.size(), static_cast<size_t>(model->spec().n_vocab));
  for (float v : logits) ASSERT_TRUE(std::isfinite(v));
  fs::remove(o.output_path);
}

// In 8-expert models (Mixtral) llama.cpp's Q4_K_M keeps attn_k and attn_v in Q8_0 and
// attn_output in Q5_K.
TEST(GenModel, Q4KMixOfAnEightExpertModel) {
  GenModelOptions o = options("mixtral", GgmlType::Q8_0, 3, "q4km8.gguf");
  o.mix = GenModelOptions::Mix::Q4_K_M;
  generate_model(o);  // tiny: 3 layers of 8 experts; layer 2 is a more-bits layer
  const auto model = Model::load(o.output_path);
  for (int il = 0; il < 3; ++il) {
    const LayerWeights& w = model->layers()[static_cast<size_t>(il)];
    EXPECT_EQ(w.wk.type, GgmlType::Q8_0);
    EXPECT_EQ(w.wv.type, GgmlType::Q8_0);
    EXPECT_EQ(w.wo.type, GgmlType::Q5_K);
    EXPECT_EQ(w.wq.type, GgmlType::Q4_K);
    EXPECT_EQ(w.down_exps.type, il == 2 ? GgmlType::Q6_K : GgmlType::Q4_K) << il;
  }
  fs::remove(o.output_path);
}

TEST(GenModel, RejectsWhatItCannotWrite) {
  GenModelOptions o = options("gpt-oss", GgmlType::Q8_0, 1, "bad.gguf");
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.arch = "qwen3moe";
  o.preset = "huge";
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.preset = "tiny";
  o.type = GgmlType::Q5_K;
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.type = GgmlType::Q4_K;
  o.n_embd = 320;  // not a multiple of the 256-element K-quant block
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.n_embd = 0;
  o.n_expert_used = 9;
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.n_expert_used = 0;
  o.vocab_path = temp_path("no-such-vocab.gguf");
  EXPECT_THROW(generate_model(o), GgufError);
  EXPECT_FALSE(fs::exists(o.output_path));
  EXPECT_FALSE(fs::exists(o.output_path + ".tmp"));
}

int run_cli(const std::string& args, std::string* err) {
  const std::string log = temp_path("cli.log");
  const int status =
      std::system((std::string(TANDEM_BINARY) + " " + args + " 2>" + log + " >/dev/null").c_str());
  *err = slurp(log);
  fs::remove(log);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

TEST(GenModelCli, WritesWhatTheLibraryWritesAndRejectsBadArguments) {
  std::string err;
  EXPECT_EQ(run_cli("gen-model --help", &err), 0);
  EXPECT_EQ(run_cli("gen-model --type q9_9 -o /tmp/x.gguf", &err), 2);
  EXPECT_NE(err.find("'q9_9'"), std::string::npos) << err;
  EXPECT_EQ(run_cli("gen-model --layers abc -o /tmp/x.gguf", &err), 2);
  EXPECT_NE(err.find("--layers"), std::string::npos) << err;
  EXPECT_EQ(run_cli("gen-model --arch olmoe", &err), 2);
  EXPECT_NE(err.find("-o"), std::string::npos) << err;
  const std::string out = temp_path("cli.gguf");
  ASSERT_EQ(run_cli("gen-model --arch olmoe --type f16 --seed 9 -t 1 -o " + out, &err), 0) << err;
  EXPECT_NE(err.find("100%"), std::string::npos) << "progress on stderr: " << err;
  const std::string lib = generate("olmoe", GgmlType::F16, 9, "lib.gguf");
  EXPECT_TRUE(slurp(out) == slurp(lib));
  ASSERT_EQ(run_cli("gen-model --arch olmoe --type q4_k_m --seed 9 -o " + out, &err), 0) << err;
  GenModelOptions mix = options("olmoe", GgmlType::Q8_0, 9, "lib-mix.gguf");
  mix.mix = GenModelOptions::Mix::Q4_K_M;
  generate_model(mix);
  EXPECT_TRUE(slurp(out) == slurp(mix.output_path));
  fs::remove(mix.output_path);
  EXPECT_NE(run_cli("gen-model --vocab " + temp_path("none.gguf") + " -o " + out, &err), 0);
  EXPECT_NE(err.find("none.gguf"), std::string::npos) << err;
  fs::remove(out);
  fs::remove(lib);
}

}  // namespace
}  // namespace tandem
