// Parity with llama.cpp's logits for the tiny reference models, teacher-forced: every case's
// prompt is one batch, then the reference's greedy tokens are fed one at a time.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <ostream>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cpu/cpu_features.h"
#include "engine/engine.h"
#include "engine/logit_case.h"
#include "engine/model.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

struct GoldenSpec {
  std::string dir;    // "golden" or "golden-exact"
  std::string model;  // file stem
  double tol;         // per-row max |diff| most rows must meet
  double min_within;  // fraction of rows within tol
  double max_any;     // no row may exceed this
  KvType kv;
  WeightLayout layout = WeightLayout::File;
};

std::string name_of(const testing::TestParamInfo<GoldenSpec>& info) {
  std::string n = info.param.dir + "_" + info.param.model +
                  (info.param.layout == WeightLayout::Cpu ? "_cpu_layout" : "");
  std::replace_if(n.begin(), n.end(), [](char c) { return !std::isalnum(static_cast<unsigned char>(c)); }, '_');
  return n;
}

double row_max_diff(const std::vector<float>& a, const nlohmann::json& b) {
  double m = 0;
  for (size_t i = 0; i < a.size(); ++i) m = std::max(m, std::abs(a[i] - b[i].get<double>()));
  return m;
}

// Gap between the reference's top-1 and top-2 logits, and its argmax.
std::pair<double, int> top_gap(const nlohmann::json& row) {
  double best = -1e30, second = -1e30;
  int arg = 0;
  for (size_t i = 0; i < row.size(); ++i) {
    const double v = row[i].get<double>();
    if (v > best) {
      second = best;
      best = v;
      arg = static_cast<int>(i);
    } else if (v > second) {
      second = v;
    }
  }
  return {best - second, arg};
}

void PrintTo(const GoldenSpec& g, std::ostream* os) {
  *os << g.dir << "/" << g.model << (g.layout == WeightLayout::Cpu ? " (CPU layout)" : "");
}

class GoldenParity : public testing::TestWithParam<GoldenSpec> {};

TEST_P(GoldenParity, TeacherForcedLogits) {
  TANDEM_REQUIRE_SHARED();
  const GoldenSpec& g = GetParam();
  std::ifstream in(test::shared_path(g.dir + "/" + g.model + ".json"));
  ASSERT_TRUE(in) << "missing golden file for " << g.model;
  const nlohmann::json golden = nlohmann::json::parse(in);
  const auto model =
      Model::load(test::shared_path("models/" + g.model + ".gguf"), GgufMemory::Read, g.layout);
  if (g.layout == WeightLayout::Cpu && cpu_features().has_avx512_kernels()) {
    EXPECT_GT(model->n_interleaved(), 0) << "no matrix was rearranged: the test would not cover it";
  }
  EngineOptions opts;
  opts.n_ctx = 512;
  opts.kv_type = g.kv;
  Engine engine(*model, opts);

  int n_rows = 0, n_within = 0, n_argmax_checked = 0;
  double worst = 0;
  std::vector<double> diffs;
  for (const nlohmann::json& gc : golden["cases"]) {
    const auto prompt = gc["prompt"].get<std::vector<int32_t>>();
    const auto forced = gc["greedy"].get<std::vector<int32_t>>();
    const LogitCase c = run_logit_case(engine, 0, prompt, &forced, 0);
    std::vector<std::pair<const std::vector<float>*, const nlohmann::json*>> rows;
    for (size_t i = 0; i < prompt.size(); ++i) rows.emplace_back(&c.prompt_logits[i], &gc["prompt_logits"][i]);
    for (size_t i = 0; i < forced.size(); ++i) rows.emplace_back(&c.decode_logits[i], &gc["decode_logits"][i]);
    for (const auto& [mine, ref] : rows) {
      const double d = row_max_diff(*mine, *ref);
      if (std::getenv("TANDEM_PARITY_VERBOSE")) std::printf("  row %d: max |diff| %.3g\n", n_rows, d);
      diffs.push_back(d);
      ++n_rows;
      n_within += d <= g.tol;
      worst = std::max(worst, d);
      const auto [gap, ref_arg] = top_gap(*ref);
      if (gap > 2 * g.tol) {
        ++n_argmax_checked;
        const int my_arg = static_cast<int>(std::max_element(mine->begin(), mine->end()) - mine->begin());
        EXPECT_EQ(my_arg, ref_arg) << "argmax differs where the reference gap is " << gap;
      }
    }
  }
  std::sort(diffs.begin(), diffs.end());
  std::printf("[ parity ] %s/%s: %d rows, median %.2e, p90 %.2e, max %.2e, %d/%d within %.0e, %d argmax checked\n",
              g.dir.c_str(), g.model.c_str(), n_rows, diffs[diffs.size() / 2], diffs[diffs.size() * 9 / 10],
              worst, n_within, n_rows, g.tol, n_argmax_checked);
  EXPECT_GE(n_within, g.min_within * n_rows);
  EXPECT_LT(worst, g.max_any);
}

// Default reference: f16 K/V cache with flash attention, so Tandem runs an f16 cache too.
// Tolerances per file type from the reference data's description (FORMAT.md, section 4).
INSTANTIATE_TEST_SUITE_P(
    Default, GoldenParity,
    testing::Values(GoldenSpec{"golden", "tiny-qwen3moe-f32", 3e-3, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen3moe-f16", 5e-3, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen3moe-bf16", 1.5e-2, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen3moe-q8_0", 0.05, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen3moe-q8_0", 0.05, 0.75, 0.3, KvType::F16,
                               WeightLayout::Cpu},
                    GoldenSpec{"golden", "tiny-qwen3moe-q4_0", 0.05, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen3moe-q4_k_m", 0.08, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen3moe-q4_k_m", 0.08, 0.75, 0.3, KvType::F16,
                               WeightLayout::Cpu},
                    GoldenSpec{"golden", "tiny-qwen3moe-q6_k", 0.08, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-qwen2moe-f16", 5e-3, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-mixtral-f16", 5e-3, 0.75, 0.3, KvType::F16},
                    GoldenSpec{"golden", "tiny-olmoe-f16", 5e-3, 0.75, 0.3, KvType::F16}),
    name_of);

// Strict reference: f32 K/V cache, no flash attention; llama.cpp's activation rounding is
// emulated, so rows agree to ~5e-6. In the quantized files a few rows depart (~1e-2): an
// activation sitting on a rounding tie of the q8 quantization goes the other way when the
// float summation order before it differs from llama.cpp's (we measured 68/74 rows within
// 1e-4 for q8_0 and Q4_K_M; which rows depart moves with kernel changes), and the departure
// then carries through attention. The f32 file has no such ties.
INSTANTIATE_TEST_SUITE_P(
    Exact, GoldenParity,
    testing::Values(GoldenSpec{"golden-exact", "tiny-qwen3moe-f32", 1e-4, 0.95, 0.3, KvType::F32},
                    GoldenSpec{"golden-exact", "tiny-qwen3moe-q8_0", 1e-4, 0.75, 0.3, KvType::F32},
                    GoldenSpec{"golden-exact", "tiny-qwen3moe-q8_0", 1e-4, 0.75, 0.3, KvType::F32,
                               WeightLayout::Cpu},
                    GoldenSpec{"golden-exact", "tiny-qwen3moe-q4_k_m", 1e-4, 0.75, 0.3,
                               KvType::F32},
                    GoldenSpec{"golden-exact", "tiny-qwen3moe-q4_k_m", 1e-4, 0.75, 0.3,
                               KvType::F32, WeightLayout::Cpu}),
    name_of);

// The prompt as one batch and the same tokens one at a time give the same logits.
TEST(BatchConsistency, PromptBatchEqualsTokenByToken) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  EngineOptions opts;
  opts.n_ctx = 64;
  opts.n_seq_max = 2;
  Engine engine(*model, opts);
  const std::vector<int32_t> prompt = {12, 7, 99, 1000, 4000, 3, 17, 256, 511, 2048};
  std::vector<BatchEntry> batch;
  for (size_t i = 0; i < prompt.size(); ++i) batch.push_back({prompt[i], static_cast<int32_t>(i), 0, true});
  std::vector<float> batched, single;
  engine.forward(batch, batched);
  const int32_t n_vocab = engine.n_vocab();
  for (size_t i = 0; i < prompt.size(); ++i) {
    const BatchEntry e{prompt[i], static_cast<int32_t>(i), 1, true};
    engine.forward(std::span(&e, 1), single);
    for (int32_t v = 0; v < n_vocab; ++v) {
      ASSERT_NEAR(batched[i * n_vocab + v], single[v], 1e-4) << "position " << i << " token " << v;
    }
  }
}

// Two sequences interleaved in one batch give each the logits it gets alone.
TEST(BatchConsistency, SequencesInOneBatchAreIndependent) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-q8_0.gguf"));
  EngineOptions opts;
  opts.n_ctx = 64;
  opts.n_seq_max = 2;
  Engine engine(*model, opts);
  const std::vector<int32_t> a = {5, 6, 7, 8}, b = {900, 901, 902};
  std::vector<float> alone_a, alone_b, mixed;
  const LogitCase ca = run_logit_case(engine, 0, a, nullptr, 0);
  const LogitCase cb = run_logit_case(engine, 1, b, nullptr, 0);
  engine.clear_sequence(0);
  engine.clear_sequence(1);
  std::vector<BatchEntry> batch;
  for (size_t i = 0; i < 4; ++i) {
    batch.push_back({a[i], static_cast<int32_t>(i), 0, true});
    if (i < 3) batch.push_back({b[i], static_cast<int32_t>(i), 1, true});
  }
  engine.forward(batch, mixed);
  const int32_t n_vocab = engine.n_vocab();
  for (int32_t v = 0; v < n_vocab; ++v) {
    ASSERT_NEAR(mixed[6 * n_vocab + v], ca.prompt_logits[3][v], 1e-4);  // last token of a
    ASSERT_NEAR(mixed[5 * n_vocab + v], cb.prompt_logits[2][v], 1e-4);  // last token of b
  }
}

TEST(EngineErrors, RejectsBadBatchEntries) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-q8_0.gguf"));
  EngineOptions opts;
  opts.n_ctx = 16;
  Engine engine(*model, opts);
  std::vector<float> logits;
  const std::vector<BatchEntry> bad_token = {{5000, 0, 0, true}};
  EXPECT_THROW(engine.forward(bad_token, logits), std::invalid_argument);
  const std::vector<BatchEntry> bad_seq = {{5, 0, 3, true}};
  EXPECT_THROW(engine.forward(bad_seq, logits), std::invalid_argument);
  const std::vector<BatchEntry> gap = {{5, 2, 0, true}};
  EXPECT_THROW(engine.forward(gap, logits), std::invalid_argument);
  const std::vector<BatchEntry> past_ctx = {{5, 16, 0, true}};
  EXPECT_THROW(engine.forward(past_ctx, logits), std::invalid_argument);
}

}  // namespace
}  // namespace tandem
