// Expert deferral (EngineOptions::defer_experts): the split of each token's expert outputs
// into immediate and deferred parts, the engine's refusal of impossible settings, and the
// logit change deferral causes on the strict goldens (printed, as the scheduler docs report).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <random>

#include "engine/engine.h"
#include "engine/logit_case.h"
#include "engine/model.h"
#include "engine/moe.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

TEST(ExpertDeferral, SplitKeepsTheSumAndDefersTheLowestWeights) {
  const int32_t n_tokens = 3, k = 4, n_embd = 5;
  Routing r;
  r.n_tokens = n_tokens;
  r.k = k;
  r.weight = {0.4f,  0.3f,  0.2f,  0.1f,    // token 0: slots 3 then 2 are the lowest
              0.1f,  0.5f,  0.1f,  0.3f,    // token 1: a tie at 0.1, the later slot (2) goes first
              0.25f, 0.25f, 0.25f, 0.25f};  // token 2: all tied: slots 3, 2, ...
  r.expert.assign(n_tokens * k, 0);
  MoeScratch scratch;
  scratch.slot_out.resize(n_tokens * k * n_embd);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-1, 1);
  for (float& v : scratch.slot_out) v = u(rng);
  std::vector<float> all(n_tokens * n_embd), out(n_tokens * n_embd), deferred(n_tokens * n_embd);
  combine_slots(r, n_embd, scratch, all.data());

  combine_slots_deferring(r, n_embd, scratch, 0, out.data(), deferred.data());
  EXPECT_EQ(out, all);
  EXPECT_TRUE(std::all_of(deferred.begin(), deferred.end(), [](float v) { return v == 0; }));

  const int32_t expected_deferred[n_tokens][2] = {{3, 2}, {2, 0}, {3, 2}};
  for (int32_t n_defer = 1; n_defer <= 2; ++n_defer) {
    combine_slots_deferring(r, n_embd, scratch, n_defer, out.data(), deferred.data());
    for (int32_t t = 0; t < n_tokens; ++t) {
      for (int32_t c = 0; c < n_embd; ++c) {
        const auto slot = [&](int32_t j) { return scratch.slot_out[(t * k + j) * n_embd + c]; };
        float want = 0;
        for (int32_t i = 0; i < n_defer; ++i) want += slot(expected_deferred[t][i]);
        EXPECT_NEAR(deferred[t * n_embd + c], want, 1e-6) << "token " << t << " d " << n_defer;
        EXPECT_NEAR(out[t * n_embd + c] + deferred[t * n_embd + c], all[t * n_embd + c], 1e-6);
      }
    }
  }
}

TEST(ExpertDeferral, EngineRefusesDeferringEveryExpert) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-q8_0.gguf"));
  EngineOptions opts;
  opts.n_ctx = 16;
  opts.defer_experts = model->spec().n_expert_used;
  try {
    Engine engine(*model, opts);
    FAIL() << "deferring all experts was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("defer_experts"), std::string::npos) << e.what();
  }
  opts.defer_experts = -1;
  EXPECT_THROW(Engine(*model, opts), std::invalid_argument);
}

struct Change {
  double max_diff = 0;     // largest |logit - reference| over all rows
  double median_diff = 0;  // median over rows of the row's largest |diff|
  int n_rows = 0;
  int n_same_argmax = 0;  // rows whose argmax equals the reference's
};

Change compare(const nlohmann::json& golden, const Model& model, int32_t defer) {
  EngineOptions opts;
  opts.n_ctx = 512;
  opts.kv_type = KvType::F32;
  opts.defer_experts = defer;
  Engine engine(model, opts);
  Change ch;
  std::vector<double> rows;
  for (const nlohmann::json& gc : golden["cases"]) {
    const auto prompt = gc["prompt"].get<std::vector<int32_t>>();
    const auto forced = gc["greedy"].get<std::vector<int32_t>>();
    const LogitCase c = run_logit_case(engine, 0, prompt, &forced, 0);
    const auto check = [&](const std::vector<float>& mine, const nlohmann::json& ref) {
      double d = 0;
      size_t ref_arg = 0;
      for (size_t v = 0; v < mine.size(); ++v) {
        d = std::max(d, std::abs(mine[v] - ref[v].get<double>()));
        if (ref[v].get<double>() > ref[ref_arg].get<double>()) ref_arg = v;
      }
      const size_t my_arg = std::max_element(mine.begin(), mine.end()) - mine.begin();
      rows.push_back(d);
      ch.max_diff = std::max(ch.max_diff, d);
      ch.n_same_argmax += my_arg == ref_arg;
      ++ch.n_rows;
    };
    for (size_t i = 0; i < prompt.size(); ++i) check(c.prompt_logits[i], gc["prompt_logits"][i]);
    for (size_t i = 0; i < forced.size(); ++i) check(c.decode_logits[i], gc["decode_logits"][i]);
  }
  std::sort(rows.begin(), rows.end());
  ch.median_diff = rows[rows.size() / 2];
  return ch;
}

// Deferral is an approximation: it must move the logits (else it is not wired in), leave
// them finite, and move them more the more experts it defers; the size is reported.
TEST(ExpertDeferral, LogitChangeOnStrictGoldens) {
  TANDEM_REQUIRE_SHARED();
  for (const char* name : {"tiny-qwen3moe-f32", "tiny-qwen3moe-q8_0", "tiny-qwen3moe-q4_k_m"}) {
    std::ifstream in(test::shared_path(std::string("golden-exact/") + name + ".json"));
    ASSERT_TRUE(in) << "missing golden-exact file for " << name;
    const nlohmann::json golden = nlohmann::json::parse(in);
    const auto model = Model::load(test::shared_path(std::string("models/") + name + ".gguf"));
    const int32_t k = model->spec().n_expert_used;
    std::vector<Change> by_defer;
    for (int32_t d = 0; d <= std::min(2, k - 1); ++d) {
      by_defer.push_back(compare(golden, *model, d));
      const Change& c = by_defer.back();
      std::printf(
          "[ deferral ] %s, top-%d, defer %d: max |logit diff| %.3g, median row %.3g, "
          "argmax same as reference %d/%d\n",
          name, k, d, c.max_diff, c.median_diff, c.n_same_argmax, c.n_rows);
      EXPECT_TRUE(std::isfinite(c.max_diff)) << name << " defer " << d;
    }
    ASSERT_GE(by_defer.size(), 2u);
    EXPECT_LT(by_defer[0].median_diff, 1e-3) << name;  // without deferral: the golden
    EXPECT_GT(by_defer[1].median_diff, 10 * by_defer[0].median_diff) << name;
    if (by_defer.size() > 2) {
      EXPECT_GT(by_defer[2].median_diff, by_defer[1].median_diff) << name;
    }
  }
}

}  // namespace
}  // namespace tandem
