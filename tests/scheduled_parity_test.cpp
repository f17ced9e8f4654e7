// The scheduler-driven hybrid executor on the sim accelerator must give the CPU-only results
// under every placement policy: the same greedy tokens, logits within 1e-4 (f32 model), and no
// device memory left behind, while experts really move (copies, evictions) when the cache is
// smaller than what the prompts touch. With TANDEM_TEST_CUDA_DEVICE=N the parity cases run on
// that CUDA device (tests/parity_accelerator.h); tests of the sim's modelled link stay on it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/device_experts.h"
#include "engine/engine.h"
#include "engine/expert_executor.h"
#include "engine/logit_case.h"
#include "engine/model.h"
#include "engine/moe.h"
#include "gpu/accelerator_factory.h"
#include "gpu/hardware_profile.h"
#include "gpu/sim_accelerator.h"
#include "tests/parity_accelerator.h"
#include "tests/test_support.h"
#include "tools/gen_model.h"

namespace tandem {
namespace {

struct PolicyCase {
  std::string model;
  std::string policy;
  double cached_fraction;
};

void PrintTo(const PolicyCase& c, std::ostream* os) {
  *os << c.model << " " << c.policy << " cached " << c.cached_fraction;
}

enum class Device { Parity, SimOnly };

// Engine options on an accelerator with `cache` bytes for experts (and 64 MiB of working
// memory) under `policy`; `acc` receives the accelerator, which must outlive the engine. Parity:
// the sim or the CUDA device the environment names; SimOnly where a test needs the sim's
// modelled link.
EngineOptions hybrid_options(const EngineOptions& base, const HardwareProfile& profile,
                             uint64_t cache, const std::string& policy,
                             std::unique_ptr<Accelerator>& acc, Device device = Device::Parity) {
  const uint64_t bytes = cache + (uint64_t{64} << 20);
  acc = device == Device::SimOnly ? make_sim_accelerator(profile, bytes, nullptr)
                                  : test::make_parity_accelerator(profile, bytes, nullptr);
  EngineOptions o = base;
  o.accelerator = acc.get();
  o.expert_cache_bytes = cache;
  o.expert_policy = policy;
  return o;
}

// Bytes of one expert (gate, up and down) of layer l: what a device slot holds.
uint64_t expert_bytes(const Model& model, size_t l = 0) {
  const LayerWeights& w = model.layers()[l];
  return (w.gate_exps.n_bytes + w.up_exps.n_bytes + w.down_exps.n_bytes) /
         static_cast<uint64_t>(model.spec().n_expert);
}

// The default hardware profile with another PCIe link and kernel launch cost, written to a
// file (the scheduler's cost model reads the profile by path).
std::string profile_with_link(const test::TempDir& dir, double pcie_gbps, double overheads_us) {
  std::ifstream in(default_hardware_profile_path());
  nlohmann::json j = nlohmann::json::parse(in);
  j["gpu"]["pcie_gbps"] = pcie_gbps;
  j["gpu"]["pcie_latency_us"] = overheads_us;
  j["gpu"]["launch_overhead_us"] = overheads_us;
  const std::string path = dir.path() + "/profile.json";
  std::ofstream(path) << j.dump();
  return path;
}

class ScheduledParity : public testing::TestWithParam<PolicyCase> {};

TEST_P(ScheduledParity, EveryPolicyEqualsCpuOnly) {
  TANDEM_REQUIRE_SHARED();
  const PolicyCase& pc = GetParam();
  const auto model = Model::load(test::shared_path("models/" + pc.model + ".gguf"));
  std::ifstream in(test::shared_path("golden/" + pc.model + ".json"));
  ASSERT_TRUE(in);
  const nlohmann::json golden = nlohmann::json::parse(in);

  EngineOptions cpu_opts;
  cpu_opts.n_ctx = 128;
  Engine cpu(*model, cpu_opts);

  uint64_t slot = 0;
  for (size_t l = 0; l < model->layers().size(); ++l)
    slot = std::max(slot, expert_bytes(*model, l));
  const auto n_slots = static_cast<uint64_t>(
      pc.cached_fraction * model->spec().n_layer * model->spec().n_expert + 0.5);
  // A link and device so fast next to the CPU that prefetching the tiny experts pays off (on
  // the real profiles their copies take longer than computing them), so the prefetch paths run.
  const test::TempDir dir("tandem-sched-parity-");
  const std::string fast = profile_with_link(dir, 1000.0, 0.0);
  const HardwareProfile profile = load_hardware_profile(fast);
  uint64_t live_after = 1;
  {
    std::unique_ptr<Accelerator> acc;
    EngineOptions sim_opts = hybrid_options(cpu_opts, profile, n_slots * slot, pc.policy, acc);
    sim_opts.hardware_profile = fast;
    {
      Engine sim(*model, sim_opts);
      {
        test::AcceleratedParity parity(cpu, sim);
        for (const nlohmann::json& gc : golden["cases"]) {
          parity.run(gc["prompt"].get<std::vector<int32_t>>(), 8);
        }
      }
      const ExpertRunStats& st = sim.expert_stats();
      const auto u = [](uint64_t v) { return static_cast<unsigned long long>(v); };
      std::printf(
          "[ scheduled ] %s %s %s cached %.0f%%: gpu %llu (hits %llu, copied %llu, prefetched "
          "%llu of which used %llu), cpu %llu; prediction named %llu of %llu experts\n",
          test::parity_accelerator_name(), pc.model.c_str(), pc.policy.c_str(),
          100 * pc.cached_fraction, u(st.gpu_experts), u(st.cache_hits), u(st.copied_experts),
          u(st.prefetched_experts), u(st.prefetch_hits), u(st.cpu_experts), u(st.predicted_correct),
          u(st.predicted_experts));
      // Every accelerator run is a cache hit, a used prefetch or an on-demand copy.
      EXPECT_EQ(st.gpu_experts,
                st.cache_hits + st.prefetch_hits + st.copied_experts - st.prefetched_experts);
      EXPECT_LE(st.prefetch_hits, st.prefetched_experts);
      EXPECT_LE(st.predicted_correct, st.predicted_experts);
      // Unused predictions, and those of them found in the cache.
      EXPECT_LE(st.predicted_wrong_cached, st.predicted_wrong);
      EXPECT_LE(st.predicted_wrong_cached_if_uniform, st.predicted_wrong + 1e-9);
      if (pc.policy == "hybrimoe" || pc.policy == "tandem") {
        EXPECT_GT(st.predicted_wrong, 0u) << "random-weight routers mispredict";
      }
      // Every CPU expert of a scheduled layer is timed and fed back to the cost model, and so
      // is every accelerator expert (the sim times them all); copies once they have landed.
      EXPECT_EQ(st.cost_observations, st.cpu_experts);
      EXPECT_EQ(st.gpu_cost_observations, st.gpu_experts);
      EXPECT_EQ(st.cpu_expert_seconds > 0, st.cpu_experts > 0);
      EXPECT_EQ(st.gpu_expert_seconds > 0, st.gpu_experts > 0);
      EXPECT_LE(st.copy_cost_observations, st.copied_experts);
      if (st.copied_experts > 0) {
        EXPECT_GT(st.copy_cost_observations, 0u);
      }
      if (st.cpu_experts > 0) {
        EXPECT_GT(st.cpu_cost_error, 0.0);
      }
      const bool prefetches = pc.policy == "hybrimoe" || pc.policy == "tandem";
      EXPECT_EQ(st.predicted_experts > 0, prefetches) << "only prefetching policies predict";
      if (prefetches && pc.cached_fraction < 1.0) {
        EXPECT_GT(st.prefetched_experts, 0u);
      }
      EXPECT_EQ(st.copied_bytes, st.copied_experts * slot);
      if (pc.policy == "cpu-experts") {
        // No cache: only the whole-layer offload of prompts of 32+ tokens reaches the device.
        EXPECT_EQ(st.cache_hits, 0u);
      } else if (pc.cached_fraction < 1.0) {
        EXPECT_GT(st.gpu_experts, 0u);
        EXPECT_GT(st.cpu_experts, 0u);
      }
      if (pc.policy == "hybrimoe" || (pc.policy == "tandem" && pc.cached_fraction < 1.0)) {
        EXPECT_GT(st.copied_experts, 0u) << "a dynamic cache smaller than the working set copies";
      }
    }
    live_after = acc->live_bytes();
  }
  EXPECT_EQ(live_after, 0u) << "the engine left device memory allocated";
}

INSTANTIATE_TEST_SUITE_P(Sim, ScheduledParity,
                         testing::Values(PolicyCase{"tiny-qwen3moe-f32", "cpu-experts", 0.25},
                                         PolicyCase{"tiny-qwen3moe-f32", "static", 0.5},
                                         PolicyCase{"tiny-qwen3moe-f32", "fiddler", 0.25},
                                         PolicyCase{"tiny-qwen3moe-f32", "hybrimoe", 0.25},
                                         PolicyCase{"tiny-qwen3moe-f32", "tandem", 0.25},
                                         PolicyCase{"tiny-qwen3moe-f32", "tandem", 1.0},
                                         PolicyCase{"tiny-qwen3moe-q4_k_m", "tandem", 0.25},
                                         PolicyCase{"tiny-qwen2moe-f16", "hybrimoe", 0.25}),
                         [](const testing::TestParamInfo<PolicyCase>& param_info) {
                           const PolicyCase& c = param_info.param;
                           std::string n =
                               c.model + "_" + c.policy + "_" +
                               std::to_string(static_cast<int>(c.cached_fraction * 100));
                           for (char& ch : n)
                             ch = std::isalnum(static_cast<unsigned char>(ch)) ? ch : '_';
                           return n;
                         });

// Prefetches are issued only while the cost model says they land in time to help: over a link
// too slow for any copy to arrive within a layer, the prefetching policies still predict but
// copy nothing ahead (without the limit every layer queued its misses behind the last layer's,
// and each layer's device work waited for them); over a fast link they prefetch.
TEST(ScheduledExecutor, PrefetchesOnlyWhatLandsInTime) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  const ModelSpec& spec = model->spec();
  const uint64_t slot_bytes = expert_bytes(*model);
  const test::TempDir dir("tandem-sched-link-");
  EngineOptions base;
  base.n_ctx = 64;
  const std::vector<int32_t> prompt = {1, 17, 33, 49, 65, 81, 97, 113};
  for (const std::string policy : {"tandem", "hybrimoe"}) {
    for (const bool slow : {true, false}) {
      const std::string path = profile_with_link(dir, slow ? 1e-4 : 1000.0, 0.0);
      std::unique_ptr<Accelerator> acc;
      EngineOptions o = hybrid_options(base, load_hardware_profile(path),
                                       slot_bytes * spec.n_layer * spec.n_expert / 4, policy, acc,
                                       Device::SimOnly);
      o.hardware_profile = path;
      Engine engine(*model, o);
      const LogitCase c = run_logit_case(engine, 0, prompt, nullptr, 8);
      ASSERT_EQ(c.fed.size(), 8u);
      const ExpertRunStats& st = engine.expert_stats();
      EXPECT_GT(st.predicted_experts, 0u) << policy;
      if (slow) {
        EXPECT_EQ(st.prefetched_experts, 0u) << policy << ": a copy that lands too late";
      } else {
        EXPECT_GT(st.prefetched_experts, 0u) << policy;
      }
    }
  }
}

TEST(ScheduledExecutor, UnknownPolicyIsRefusedByName) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  const HardwareProfile profile = load_hardware_profile(default_hardware_profile_path());
  auto acc = make_sim_accelerator(profile, uint64_t{64} << 20, nullptr);
  EngineOptions opts;
  opts.n_ctx = 64;
  opts.accelerator = acc.get();
  opts.expert_policy = "fastest";
  try {
    Engine engine(*model, opts);
    FAIL() << "an unknown policy was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("fastest"), std::string::npos) << e.what();
  }
}

// A job reads its slot only after the slot's latest load, even when nothing else orders them:
// an expert can become resident without the compute stream having waited for its copy (a
// prefetched expert the planner ran on the CPU, then the cache admitted). With a 48 MB copy
// ahead of the load on the copy stream, the compute must still see the new expert's weights.
TEST(DeviceExperts, JobWaitsForItsSlotsLatestLoad) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  const ModelSpec& spec = model->spec();
  const uint64_t slot_bytes = expert_bytes(*model);
  const std::vector<uint8_t> big(48u << 20, 1);
  auto acc = make_sim_accelerator(load_hardware_profile(default_hardware_profile_path()),
                                  2 * slot_bytes + big.size() + (uint64_t{64} << 20), nullptr);
  DeviceExpertSlots slots(*model, *acc, 2 * slot_bytes);
  ASSERT_EQ(slots.n_slots(), 2);
  slots.load(0, 0, 0);
  acc->synchronize(Stream::Copy);
  DeviceExpertRunner runner(*model, *acc, slots);

  const int32_t n_tokens = 3;
  std::vector<float> x(static_cast<size_t>(n_tokens * spec.n_embd));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(0.37f * static_cast<float>(i));
  const Routing routing{n_tokens, 1, {1, 1, 1}, {1.0f, 1.0f, 1.0f}};
  const ExpertTokens group{1, {0, 1, 2}, {0, 0, 0}};
  MoeScratch scratch;
  scratch.slot_out.assign(x.size(), 0.0f);
  run_expert(spec, model->layers().front(), group, routing, x.data(), scratch, nullptr);
  const std::vector<float> want = scratch.slot_out;

  const DeviceBuffer dbig = acc->allocate(big.size());
  acc->copy_to_device(Stream::Copy, dbig, 0, big.data(), big.size());
  slots.load(0, 0, 1);  // expert 1 replaces expert 0, behind the big copy
  std::vector<float> got(x.size(), 0.0f);
  runner.enqueue({{&group, 0}}, x.data());
  runner.finish({{&group, 0}}, routing, got.data());
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_NEAR(got[i], want[i], 1e-5f * (1.0f + std::abs(want[i]))) << "element " << i;
  }
  acc->synchronize(Stream::Copy);
  acc->release(dbig);
}

// A pinned layer holds all its experts whatever the budget: with room for one layer's experts
// (plus staging) and layer 2 pinned, layer 2 keeps all 8 experts through a reply under each
// cache ranking and the other layers hold none; outputs stay the CPU-only ones. (Which resident
// experts run on the GPU is the planner's call: with this tiny model the refit CPU times are
// close to the GPU's, so hit counts vary from run to run; residency does not.)
TEST(ScheduledExecutor, PinnedLayerKeepsEveryExpertResident) {
  TANDEM_REQUIRE_SHARED();
  const auto model = Model::load(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  const ModelSpec& spec = model->spec();
  ASSERT_EQ(spec.n_layer, 3);
  const uint64_t slot = expert_bytes(*model);
  const uint64_t cache = static_cast<uint64_t>(spec.n_expert + 2 * spec.n_expert_used) * slot;
  const HardwareProfile profile = load_hardware_profile(default_hardware_profile_path());
  EngineOptions cpu_opts;
  cpu_opts.n_ctx = 128;
  Engine cpu(*model, cpu_opts);
  for (const char* eviction : {"next-use", "score", "lru", "lfu"}) {
    std::unique_ptr<Accelerator> acc;
    EngineOptions sim_opts = hybrid_options(cpu_opts, profile, cache, "tandem", acc);
    sim_opts.pin_layers = {2};
    sim_opts.expert_eviction = eviction;
    Engine sim(*model, sim_opts);
    const std::vector<int32_t> prompt = {1, 17, 230, 5, 99, 301, 42, 7};
    test::AcceleratedParity(cpu, sim).run(prompt, 24);
    EXPECT_EQ(sim.cached_experts(2), spec.n_expert) << eviction;
    EXPECT_EQ(sim.cached_experts(0), 0) << eviction;
    EXPECT_EQ(sim.cached_experts(1), 0) << eviction;
    EXPECT_GT(sim.expert_stats().cache_hits, 0u) << eviction;
  }
  std::unique_ptr<Accelerator> acc;
  EngineOptions bad = hybrid_options(cpu_opts, profile, cache, "tandem", acc);
  bad.expert_eviction = "mru";
  EXPECT_THROW(Engine(*model, bad), std::invalid_argument);
  bad.expert_eviction = "next-use";
  bad.pin_layers = {0, 1};  // two layers' experts do not fit
  EXPECT_THROW(Engine(*model, bad), std::invalid_argument);
}

// Many activated experts against a cache of a few slots per layer: one layer admits several
// on-demand copies, and an expert admitted a moment ago may be the next admission's victim.
// Every copy must have a slot and every cached expert its weights, for hundreds of steps.
TEST(ScheduledExecutor, ManyCopiesPerLayerKeepCacheAndSlotsInStep) {
  const test::TempDir dir("tandem-sched-many-");
  GenModelOptions g;
  g.output_path = dir.path() + "/many-experts.gguf";
  g.type = GgmlType::F32;
  g.n_layer = 3;
  g.n_embd = 128;
  g.n_head = 2;
  g.n_head_kv = 1;
  g.head_dim = 64;
  g.n_expert = 64;
  g.n_expert_used = 8;
  g.n_ff_expert = 64;
  g.n_vocab = 512;
  generate_model(g);
  const auto model = Model::load(g.output_path);
  const uint64_t slot = expert_bytes(*model);
  const HardwareProfile profile = load_hardware_profile(default_hardware_profile_path());
  EngineOptions cpu_opts;
  cpu_opts.n_ctx = 512;
  Engine cpu(*model, cpu_opts);
  for (const char* policy : {"tandem", "hybrimoe"}) {
    const uint64_t cache = 40 * slot;  // staging and prefetch slots, then ~5 cached per layer
    std::unique_ptr<Accelerator> acc;
    const EngineOptions sim_opts = hybrid_options(cpu_opts, profile, cache, policy, acc);
    Engine sim(*model, sim_opts);
    const std::vector<int32_t> prompt = {1, 17, 230, 5, 99, 301, 42, 7};
    test::AcceleratedParity(cpu, sim).run(prompt, 300);
    const ExpertRunStats& st = sim.expert_stats();
    EXPECT_GT(st.copied_experts, st.prefetched_experts) << policy << ": copies on demand";
    EXPECT_GT(st.cpu_experts, 0u) << policy;
  }
}

}  // namespace
}  // namespace tandem
