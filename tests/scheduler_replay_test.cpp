// The replay simulator on a small shape: every policy runs, the accounting is consistent, the
// Chrome trace is well formed, and mismatched traces are refused.
#include <gtest/gtest.h>

#include <cstdio>

#include "scheduler/replay.h"

namespace tandem::sched {
namespace {

HardwareSpec desktop() {
  return load_hardware_spec(std::string(TANDEM_SOURCE_DIR) +
                            "/configs/hardware/rtx4090-ddr5-desktop.json");
}

RoutingTrace small_trace(const ModelShape& s, int32_t n_decode = 16) {
  SyntheticTraceConfig c;
  c.n_layer = s.n_moe_layers();
  c.n_expert = s.n_expert;
  c.n_expert_used = s.n_expert_used;
  c.n_prompt = 128;
  c.n_decode = n_decode;
  return make_synthetic_trace(c);
}

// Qwen3-30B-A3B in Q4_K on the desktop profile, a short synthetic trace, 4 GB for experts.
struct SmallCase {
  ModelShape shape = named_shape("qwen3-30b-a3b", "q4_k");
  CostModel cost = CostModel::from_hardware(desktop(), shape);
  RoutingTrace trace = small_trace(shape);
  ReplayOptions opt = [] {
    ReplayOptions o;
    o.expert_vram_gb = 4;
    return o;
  }();
  ReplayResult run(const std::string& policy) const {
    return replay(shape, cost, trace, policy, opt);
  }
};

TEST(Replay, EveryPolicyRunsAndAccountsConsistently) {
  const SmallCase c;
  std::map<std::string, ReplayResult> r;
  for (const std::string& p : policy_names()) {
    r[p] = c.run(p);
    const ReplayResult& x = r[p];
    EXPECT_EQ(x.decode.n_tokens, 16) << p;
    EXPECT_EQ(x.prefill.n_tokens, 128) << p;
    EXPECT_GT(x.decode.tokens_per_s, 0) << p;
    EXPECT_EQ(x.decode.n_lookups > 0, true) << p;
    // Phase time covers the busiest device.
    EXPECT_LE(x.decode.busy.cpu_us, x.decode.time_us * (1 + 1e-9)) << p;
    EXPECT_LE(x.decode.busy.gpu_us, x.decode.time_us * (1 + 1e-9)) << p;
  }
  EXPECT_EQ(r["cpu-experts"].decode.n_hits, 0);
  EXPECT_EQ(r["cpu-experts"].decode.bytes_copied, 0);
  EXPECT_EQ(r["static"].decode.bytes_copied, 0);   // no per-expert copies in decode
  EXPECT_GT(r["static"].prefill.bytes_copied, 0);  // llama.cpp's whole-layer prefill offload
  EXPECT_GT(r["tandem"].decode.tokens_per_s, r["cpu-experts"].decode.tokens_per_s);
  EXPECT_GT(r["tandem"].decode.n_hits, 0);
  EXPECT_GT(r["tandem"].n_prefetched, 0);
}

// Deferral moves some CPU experts past the next layer's attention: tandem defers (and decodes
// no slower, since the CPU otherwise idles during attention), the baselines ignore it, and the
// phase time still covers every device's work.
TEST(Replay, ExpertDeferralOverlapsNextAttention) {
  SmallCase c;
  const ReplayResult plain = c.run("tandem");
  EXPECT_EQ(plain.decode.n_deferred, 0);
  c.opt.defer_experts = 2;
  const ReplayResult deferred = c.run("tandem");
  EXPECT_GT(deferred.decode.n_deferred, 0);
  EXPECT_EQ(deferred.decode.n_lookups, plain.decode.n_lookups);
  EXPECT_GT(deferred.decode.tokens_per_s, plain.decode.tokens_per_s);
  EXPECT_LE(deferred.decode.busy.cpu_us, deferred.decode.time_us * (1 + 1e-9));
  const ReplayResult hybrimoe = c.run("hybrimoe");
  EXPECT_EQ(hybrimoe.decode.n_deferred, 0);
  // Deferring (almost) every expert leaves the GPU's and the copies' share, never a crash.
  c.opt.defer_experts = c.shape.n_expert_used - 1;
  EXPECT_GT(c.run("tandem").decode.tokens_per_s, 0);
}

// Tandem's next-use cache keeps the experts the last token used when the routing shows
// temporal locality (more decode hits than the score cache), and without locality it is a
// popularity cache that does no worse.
TEST(Replay, NextUseCacheFollowsTemporalLocality) {
  SmallCase c;
  for (double reuse : {0.0, 0.5}) {
    SyntheticTraceConfig t;
    t.n_layer = c.shape.n_moe_layers();
    t.n_expert = c.shape.n_expert;
    t.n_expert_used = c.shape.n_expert_used;
    t.n_prompt = 128;
    t.n_decode = 48;
    t.reuse = reuse;
    c.trace = make_synthetic_trace(t);
    c.opt.tandem_eviction = Eviction::Score;
    const ReplayResult score = c.run("tandem");
    c.opt.tandem_eviction = Eviction::NextUse;
    const ReplayResult next_use = c.run("tandem");
    if (reuse > 0) {
      EXPECT_GT(next_use.decode.hit_rate(), score.decode.hit_rate() + 0.02);
      EXPECT_GT(next_use.decode.tokens_per_s, score.decode.tokens_per_s);
    } else {
      EXPECT_GT(next_use.decode.hit_rate(), score.decode.hit_rate() - 0.01);
    }
    std::printf("reuse %.1f: decode hit rate next-use %.3f, score %.3f\n", reuse,
                next_use.decode.hit_rate(), score.decode.hit_rate());
  }
}

// With a predictor that is always wrong, nothing prefetched is used. Wrong guesses drawn like
// the routing name popular experts, which the cache mostly holds already, so far fewer of them
// are copied than when they are uniform over the unused experts.
TEST(Replay, WrongPredictionsFollowTheRoutingOrAreUniform) {
  SmallCase c;
  c.opt.prefetch_accuracy = 0.0;
  c.opt.prefetch_errors = PredictionErrors::LikeRouting;
  const ReplayResult routing = c.run("tandem");
  c.opt.prefetch_errors = PredictionErrors::Uniform;
  const ReplayResult uniform = c.run("tandem");
  EXPECT_EQ(routing.n_prefetch_used, 0);
  EXPECT_EQ(uniform.n_prefetch_used, 0);
  EXPECT_GT(routing.n_prefetched, 0);
  EXPECT_LT(routing.n_prefetched, uniform.n_prefetched * 3 / 4);
  std::printf("always-wrong predictor: %lld prefetches (routing-like errors), %lld (uniform)\n",
              static_cast<long long>(routing.n_prefetched),
              static_cast<long long>(uniform.n_prefetched));
  // Every decode prediction is wrong: k per layer and step. Uniform guesses find the cache as
  // often as its share of the unused experts predicts; routing-like ones far more often.
  const int64_t n_guesses =
      int64_t{16} * c.shape.n_moe_layers() - 16;  // 16 steps; layer 0 is never predicted
  EXPECT_EQ(uniform.n_wrong_guesses, n_guesses * c.shape.n_expert_used);
  EXPECT_EQ(routing.n_wrong_guesses, uniform.n_wrong_guesses);
  EXPECT_NEAR(static_cast<double>(uniform.n_wrong_guesses_cached),
              uniform.wrong_guesses_cached_if_uniform,
              0.1 * uniform.wrong_guesses_cached_if_uniform);
  EXPECT_GT(static_cast<double>(routing.n_wrong_guesses_cached),
            2.0 * routing.wrong_guesses_cached_if_uniform);
  EXPECT_EQ(parse_prediction_errors("uniform"), PredictionErrors::Uniform);
  EXPECT_STREQ(prediction_errors_name(parse_prediction_errors("routing")), "routing");
  EXPECT_THROW(parse_prediction_errors("random"), std::invalid_argument);
}

TEST(Replay, ZeroBudgetAndCpuOnlyHardware) {
  const ModelShape shape = named_shape("mixtral-8x7b", "q8_0");
  HardwareSpec hw = desktop();
  ReplayOptions opt;
  opt.expert_vram_gb = 0;
  const RoutingTrace trace = small_trace(shape, 4);
  const ReplayResult t = replay(shape, CostModel::from_hardware(hw, shape), trace, "tandem", opt);
  EXPECT_EQ(t.expert_slots, 0);
  hw.has_gpu = false;
  const CostModel cpu_only = CostModel::from_hardware(hw, shape);
  EXPECT_GT(replay(shape, cpu_only, trace, "cpu-experts", opt).decode.tokens_per_s, 0);
  EXPECT_THROW(replay(shape, cpu_only, trace, "tandem", opt), std::invalid_argument);
  EXPECT_THROW(replay(shape, cpu_only, trace, "magic", opt), std::invalid_argument);
}

TEST(Replay, ChromeTraceHasSpansOnEveryLane) {
  const ModelShape shape = named_shape("qwen3-30b-a3b", "q4_k");
  const CostModel cost = CostModel::from_hardware(desktop(), shape);
  ReplayOptions opt;
  opt.expert_vram_gb = 4;
  ChromeTrace timeline;
  replay(shape, cost, small_trace(shape, 4), "tandem", opt, &timeline);
  const nlohmann::json j = nlohmann::json::parse(timeline.to_json().dump());
  ASSERT_TRUE(j["traceEvents"].is_array());
  std::set<int> lanes;
  for (const auto& e : j["traceEvents"]) {
    if (e["ph"] != "X") continue;
    EXPECT_GE(e["dur"].get<double>(), 0.0);
    EXPECT_GE(e["ts"].get<double>(), 0.0);
    EXPECT_EQ(e["pid"], 1);
    lanes.insert(e["tid"].get<int>());
  }
  EXPECT_EQ(lanes, (std::set<int>{1, 2, 3}));
}

TEST(Replay, MismatchedTraceIsRefused) {
  const ModelShape shape = named_shape("qwen3-30b-a3b", "q4_k");
  const CostModel cost = CostModel::from_hardware(desktop(), shape);
  const RoutingTrace other = small_trace(named_shape("mixtral-8x7b"), 2);
  try {
    replay(shape, cost, other, "tandem", ReplayOptions{});
    FAIL() << "accepted a trace of another model";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("does not match model shape 'qwen3-30b-a3b'"),
              std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace tandem::sched
