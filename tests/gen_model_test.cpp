// gen-model: files re-read with the names, shapes and types llama.cpp expects; the same seed
// gives the same bytes; weights look like N(0, 0.02^2); the CLI reports bad input clearly.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <algorithm>
#include <cstdlib>
#include <iterator>

#include "cpu/quant.h"
#include "engine/gguf.h"
#include "engine/model.h"
#include "tools/gen_model.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("tandem-gen-" + std::to_string(::getpid()) + "-" + name)).string();
}

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

std::string generate(const std::string& arch, GgmlType type, uint64_t seed, const std::string& name) {
  GenModelOptions o;
  o.arch = arch;
  o.type = type;
  o.seed = seed;
  o.output_path = temp_path(name);
  generate_model(o);
  return o.output_path;
}

class GenModelArch : public testing::TestWithParam<std::string> {};

TEST_P(GenModelArch, LoadsWithTheExpectedTensors) {
  const std::string arch = GetParam();
  const std::string path = generate(arch, GgmlType::Q8_0, 7, arch + ".gguf");
  const auto model = Model::load(path);  // checks every tensor's name, type and shape
  const ModelSpec& s = model->spec();
  EXPECT_EQ(s.arch, arch == "mixtral" ? "llama" : arch);
  EXPECT_EQ(s.n_layer, 3);
  EXPECT_EQ(s.n_embd, 256);
  EXPECT_EQ(s.n_expert, 8);
  EXPECT_EQ(s.n_expert_used, 2);
  EXPECT_EQ(s.n_vocab, 4096);
  EXPECT_EQ(s.n_ff_shared, arch == "qwen2moe" ? 512 : 0);
  EXPECT_EQ(s.qk_norm, arch == "qwen3moe" ? QkNorm::PerHead : arch == "olmoe" ? QkNorm::Full : QkNorm::None);
  EXPECT_EQ(model->layers()[0].gate_exps.type, GgmlType::Q8_0);
  EXPECT_EQ(model->layers()[0].router.type, GgmlType::F32);
  fs::remove(path);
}

INSTANTIATE_TEST_SUITE_P(Archs, GenModelArch, testing::Values("qwen3moe", "qwen2moe", "mixtral", "olmoe"));

TEST(GenModel, SameSeedSameBytesOtherSeedOtherBytes) {
  const std::string a = generate("qwen3moe", GgmlType::Q4_K, 11, "a.gguf");
  const std::string b = generate("qwen3moe", GgmlType::Q4_K, 11, "b.gguf");
  const std::string c = generate("qwen3moe", GgmlType::Q4_K, 12, "c.gguf");
  EXPECT_TRUE(slurp(a) == slurp(b));
  EXPECT_FALSE(slurp(a) == slurp(c));
  for (const auto& p : {a, b, c}) fs::remove(p);
}

TEST(GenModel, WeightsAreNormalWithStd002InEveryType) {
  for (GgmlType type : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                        GgmlType::Q4_K, GgmlType::Q6_K}) {
    const std::string path = generate("qwen3moe", type, 3, "stats.gguf");
    const auto f = GgufFile::open(path);
    const TensorView* t = f->find_tensor("blk.1.ffn_up_exps.weight");
    ASSERT_NE(t, nullptr);
    EXPECT_EQ(t->type, type);
    std::vector<float> v(static_cast<size_t>(t->n_elements()));
    dequantize_row(t->type, t->data, v.data(), t->n_elements());
    double sum = 0, sq = 0;
    for (float x : v) {
      sum += x;
      sq += static_cast<double>(x) * x;
    }
    const double mean = sum / v.size(), sd = std::sqrt(sq / v.size() - mean * mean);
    EXPECT_NEAR(mean, 0.0, 2e-4) << type_name(type);
    EXPECT_NEAR(sd, 0.02, 0.002) << type_name(type);
    const TensorView* norm = f->find_tensor("blk.1.ffn_norm.weight");
    EXPECT_EQ(reinterpret_cast<const float*>(norm->data)[5], 1.0f);
    fs::remove(path);
  }
}

TEST(GenModel, RejectsWhatItCannotWrite) {
  GenModelOptions o;
  o.output_path = temp_path("bad.gguf");
  o.arch = "gpt-oss";
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.arch = "qwen3moe";
  o.type = GgmlType::Q5_K;
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  o.type = GgmlType::Q4_K;
  o.n_embd = 320;  // not a multiple of the 256-element K-quant block
  EXPECT_THROW(generate_model(o), std::invalid_argument);
  EXPECT_FALSE(fs::exists(o.output_path));
}

int run_cli(const std::string& args, std::string* err) {
  const std::string log = temp_path("cli.log");
  const int rc = std::system((std::string(TANDEM_BINARY) + " " + args + " 2>" + log + " >/dev/null").c_str());
  *err = slurp(log);
  fs::remove(log);
  return rc;
}

TEST(GenModelCli, BadArgumentsAndInspect) {
  std::string err;
  EXPECT_NE(run_cli("gen-model --type q9_9 -o /tmp/x.gguf", &err), 0);
  EXPECT_NE(err.find("'q9_9'"), std::string::npos) << err;
  EXPECT_NE(run_cli("gen-model --layers abc -o /tmp/x.gguf", &err), 0);
  EXPECT_NE(err.find("--layers"), std::string::npos) << err;
  const std::string out = temp_path("cli.gguf");
  ASSERT_EQ(run_cli("gen-model --arch olmoe --type f16 -o " + out, &err), 0) << err;
  EXPECT_EQ(run_cli("inspect " + out, &err), 0) << err;
  {
    std::ofstream cut(out + ".cut", std::ios::binary);
    const std::string bytes = slurp(out);
    cut.write(bytes.data(), 3000);
  }
  EXPECT_NE(run_cli("inspect " + out + ".cut", &err), 0);
  EXPECT_NE(err.find("invalid GGUF"), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << "one-line reason: " << err;
  fs::remove(out);
  fs::remove(out + ".cut");
}

}  // namespace
}  // namespace tandem
