// Model shapes, hardware profiles, expert cache and routing traces.
#include <gtest/gtest.h>

#include <functional>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "scheduler/expert_cache.h"
#include "scheduler/hardware.h"
#include "scheduler/model_shape.h"
#include "scheduler/routing_trace.h"

namespace tandem::sched {
namespace {

TEST(ModelShape, NamedShapesHaveTheirPublishedSizes) {
  const ModelShape q = named_shape("qwen3-235b-a22b", "q4_k");
  EXPECT_EQ(q.n_layer, 94);
  EXPECT_EQ(q.n_expert, 128);
  EXPECT_EQ(q.n_expert_used, 8);
  EXPECT_DOUBLE_EQ(q.expert_bytes, 3.0 * 4096 * 1536 * 144 / 256);
  EXPECT_DOUBLE_EQ(named_shape("qwen3-235b-a22b", "q8_0").expert_bytes,
                   3.0 * 4096 * 1536 * 34 / 32);
  const ModelShape d = named_shape("deepseek-v3", "q4_k");
  EXPECT_EQ(d.n_moe_layers(), 58);
  EXPECT_GT(d.shared_bytes, 0.0);
  EXPECT_EQ(named_shape("mixtral-8x7b").n_expert_used, 2);
  EXPECT_THROW(named_shape("llama-7b"), ShapeError);
  EXPECT_THROW(named_shape("mixtral-8x7b", "q9_z"), ShapeError);
  ShapeHparams h;
  h.name = "broken";
  h.expert_type = "q8_0";
  EXPECT_THROW(shape_from_hparams(h), ShapeError);
}

TEST(Hardware, ShippedProfilesLoadWithSources) {
  for (const char* name : {"rtx4090-ddr5-desktop", "rtx3090-epyc-ddr4-8ch", "h100-pcie-xeon"}) {
    const HardwareSpec h =
        load_hardware_spec(std::string(TANDEM_SOURCE_DIR) + "/configs/hardware/" + name + ".json");
    EXPECT_EQ(h.name, name);
    EXPECT_TRUE(h.has_gpu);
    EXPECT_GT(h.cpu.dram_gbps, 0);
    EXPECT_GE(h.sources.size(), 5u);
  }
}

TEST(Hardware, ValidationNamesTheField) {
  const nlohmann::json good = {
      {"gpu", {{"vram_gb", 24}, {"hbm_gbps", 1000}, {"fp16_tflops", 100}, {"pcie_gbps", 25}}},
      {"cpu",
       {{"cores", 8}, {"dram_gb", 64}, {"dram_gbps", 80}, {"int8_tops", 4}, {"bf16_tflops", 2}}},
      {"sources", {{"all", "made up for a test"}}}};
  EXPECT_NO_THROW(parse_hardware_spec(good, "t"));
  auto expect_error = [&](nlohmann::json doc, const std::string& needle) {
    try {
      parse_hardware_spec(doc, "t.json");
      ADD_FAILURE() << "accepted a profile without " << needle;
    } catch (const HardwareError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  nlohmann::json j = good;
  j["gpu"].erase("hbm_gbps");
  expect_error(j, "gpu.hbm_gbps is missing");
  j = good;
  j["cpu"]["dram_gbps"] = -3;
  expect_error(j, "cpu.dram_gbps must be a positive number");
  j = good;
  j["efficiency"] = {{"cpu_memory", 1.5}};
  expect_error(j, "efficiency.cpu_memory must be in (0, 1]");
  j = good;
  j.erase("sources");
  expect_error(j, "\"sources\" section is missing");
  j = good;
  j["cpu"]["cores"] = "many";
  expect_error(j, "cpu.cores must be a number");
  EXPECT_THROW(load_hardware_spec("/nonexistent/profile.json"), HardwareError);
}

TEST(ExpertCache, BudgetBecomesSlotsWithPinnedLayers) {
  const std::vector<int32_t> s = slots_for_budget(41 * 10.0, 10.0, 4, 16, {0});
  EXPECT_EQ(s, (std::vector<int32_t>{16, 8, 8, 9}));  // 25 left: 8 each, the rest to the last
  // A layer never gets more slots than it has experts.
  EXPECT_EQ(slots_for_budget(1000 * 10.0, 10.0, 4, 16, {}), (std::vector<int32_t>(4, 16)));
  EXPECT_THROW(slots_for_budget(10 * 10.0, 10.0, 4, 16, {0}), std::invalid_argument);
  EXPECT_THROW(slots_for_budget(1000, 10.0, 4, 16, {7}), std::invalid_argument);
}

// One single-token step of layer 0: every expert with a gate weight got the token.
void record_token(ExpertCache& c, const std::vector<float>& gate) {
  std::vector<int32_t> tokens(gate.size());
  for (size_t e = 0; e < gate.size(); ++e) tokens[e] = gate[e] > 0;
  c.record_step(0, gate, tokens, 1);
}

TEST(ExpertCache, EvictionPoliciesPickTheirOwnVictims) {
  // Layer 0, 4 experts, 2 slots; expert 0 used heavily long ago, expert 1 lightly just now.
  for (Eviction ev : {Eviction::NextUse, Eviction::Score, Eviction::Lru, Eviction::Lfu}) {
    ExpertCache c(1, 4, {2}, ev, 0.5);
    c.fill(0, {0, 1});
    for (int i = 0; i < 3; ++i) record_token(c, {1.0f, 0.0f, 0.0f, 0.0f});
    record_token(c, {0.0f, 0.1f, 0.0f, 0.0f});
    record_token(c, {0.0f, 0.0f, 0.9f, 0.0f});
    record_token(c, {0.0f, 0.0f, 0.9f, 0.0f});
    int32_t victim = -2;
    ASSERT_TRUE(c.should_admit(0, 2, &victim)) << eviction_name(ev);
    // Score: expert 1's average (0.1 then decayed) is lowest; LRU: expert 0 is oldest;
    // LFU and next-use: expert 1 has the fewest uses, so the smallest token share.
    EXPECT_EQ(victim, ev == Eviction::Lru ? 0 : 1) << eviction_name(ev);
    c.admit(0, 2, victim);
    EXPECT_TRUE(c.resident(0, 2));
    EXPECT_EQ(c.n_resident(), 2);
    EXPECT_FALSE(c.should_admit(0, 3, &victim)) << "an unused expert never displaces a used one";
  }
  ExpertCache fixed(1, 4, {2}, Eviction::Fixed);
  fixed.fill(0, {3, 2, 1});
  EXPECT_EQ(fixed.resident_experts(0), (std::vector<int32_t>{2, 3}));
  int32_t victim = 0;
  EXPECT_FALSE(fixed.should_admit(0, 0, &victim));
  EXPECT_THROW(parse_eviction("random"), std::invalid_argument);
  EXPECT_EQ(parse_eviction("next-use"), Eviction::NextUse);
  EXPECT_THROW(fixed.record_step(0, {1.0f}, {1}, 1), std::invalid_argument);
}

// A 64-token prompt gives experts 0-3 large shares; then single-token steps follow `pick`.
ExpertCache cache_after_steps(int32_t n_steps,
                              const std::function<std::vector<int32_t>(int)>& pick) {
  constexpr int32_t kExperts = 16;
  ExpertCache c(1, kExperts, {4}, Eviction::NextUse);
  c.fill(0, {0, 1, 2, 3});
  std::vector<float> gate(kExperts, 0.0f);
  std::vector<int32_t> tokens(kExperts, 0);
  for (int32_t e = 0; e < 4; ++e) gate[e] = 8.0f, tokens[e] = 32;  // top-2 of 64 tokens
  c.record_step(0, gate, tokens, 64);
  for (int step = 0; step < n_steps; ++step) {
    std::fill(gate.begin(), gate.end(), 0.0f);
    std::fill(tokens.begin(), tokens.end(), 0);
    for (int32_t e : pick(step)) gate[e] = 0.5f, tokens[e] = 1;
    c.record_step(0, gate, tokens, 1);
  }
  return c;
}

TEST(ExpertCache, NextUseLearnsTemporalLocalityFromRepeats) {
  // Experts 4 and 5 return at every token: far more often than their small shares predict.
  const ExpertCache local = cache_after_steps(40, [](int) { return std::vector<int32_t>{4, 5}; });
  EXPECT_GT(local.locality(0), 0.8);
  EXPECT_GT(local.next_use_probability(0, 4), local.next_use_probability(0, 0));
  int32_t victim = -1;
  EXPECT_TRUE(local.should_admit(0, 4, &victim));
  EXPECT_GE(victim, 0);
  EXPECT_LE(victim, 3);

  // Each token uses two experts never used just before: no locality, so a just-used expert
  // ranks by its share alone and does not displace the prompt's experts.
  const ExpertCache cold = cache_after_steps(40, [](int step) {
    return std::vector<int32_t>{4 + (2 * step) % 12, 5 + (2 * step) % 12};
  });
  EXPECT_LT(cold.locality(0), 0.01);
  const int32_t last = 5 + (2 * 39) % 12;
  EXPECT_LT(cold.next_use_probability(0, last), cold.next_use_probability(0, 0));
  EXPECT_FALSE(cold.should_admit(0, last, &victim));
  // Shares are per token: the prompt's experts got half of 64 tokens, the others one token in
  // six (about 0.03 against 0.007 after the decay).
  EXPECT_GT(cold.token_share(0, 0), 3 * cold.token_share(0, last));
}

TEST(RoutingTrace, SyntheticIsSeededSkewedAndRoundTrips) {
  SyntheticTraceConfig c;
  c.n_layer = 3;
  c.n_expert = 32;
  c.n_expert_used = 4;
  c.n_prompt = 64;
  c.n_decode = 20;
  const RoutingTrace a = make_synthetic_trace(c), b = make_synthetic_trace(c);
  ASSERT_EQ(a.steps.size(), 2u + 20u);
  EXPECT_EQ(a.steps[5].layers[1].ids, b.steps[5].layers[1].ids);
  std::map<int32_t, int> counts;
  for (const RoutingStep& s : a.steps) {
    for (size_t t = 0; t < s.layers[0].ids.size(); t += 4) {
      std::vector<int32_t> tok(s.layers[0].ids.begin() + t, s.layers[0].ids.begin() + t + 4);
      std::sort(tok.begin(), tok.end());
      EXPECT_EQ(std::unique(tok.begin(), tok.end()), tok.end()) << "experts of a token repeat";
      for (int32_t e : tok) ++counts[e];
    }
  }
  int top = 0, total = 0;
  for (auto& [e, n] : counts) top = std::max(top, n), total += n;
  EXPECT_GT(top, 2 * total / 32) << "Zipf popularity should make some experts far more used";
  std::stringstream io;
  write_trace(a, io);
  const RoutingTrace back = read_trace(io, "mem");
  ASSERT_EQ(back.steps.size(), a.steps.size());
  EXPECT_EQ(back.prefetch_accuracy, a.prefetch_accuracy);
  EXPECT_EQ(back.steps[21].layers[2].ids, a.steps[21].layers[2].ids);
  EXPECT_NEAR(back.steps[21].layers[2].weights[0], a.steps[21].layers[2].weights[0], 1e-6);
  EXPECT_EQ(back.steps[0].phase, Phase::Prefill);
}

TEST(RoutingTrace, ReaderNamesTheBadLine) {
  const std::string header =
      R"({"format":"tandem-routing","version":1,"n_layer":1,"n_expert":4,"n_expert_used":2})";
  auto error_of = [](const std::string& text) {
    std::stringstream in(text);
    try {
      read_trace(in, "t.jsonl");
    } catch (const TraceError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(
      error_of(
          header + "\n" +
          R"({"seq":0,"step":0,"phase":"decode","layer":0,"experts":[[1,9]],"weights":[[0.5,0.5]]})")
          .find("t.jsonl:2: token 0: expert id 9 outside [0, 4)"),
      std::string::npos);
  EXPECT_NE(error_of("{}").find("t.jsonl:1: first line must be the header"), std::string::npos);
  EXPECT_NE(error_of(header + "\nnot json").find("t.jsonl:2: not valid JSON"), std::string::npos);
  EXPECT_NE(error_of("").find("empty routing trace"), std::string::npos);
}

}  // namespace
}  // namespace tandem::sched
