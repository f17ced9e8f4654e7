// The hybrid pipeline on the sim accelerator must give the CPU-only results: with 0%, 25% and
// 100% of the experts cached in "device" memory, logits match and greedy tokens are equal, with
// weights in the file layout and with Q4_K/Q8_0 rows interleaved for the CPU (uploads then
// rebuild the file's rows for the device). With TANDEM_TEST_CUDA_DEVICE=N the same cases run on
// that CUDA device (tests/parity_accelerator.h).
#include <gtest/gtest.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>

#include "cpu/cpu_features.h"
#include "engine/engine.h"
#include "engine/expert_executor.h"
#include "engine/logit_case.h"
#include "engine/model.h"
#include "engine/trace.h"
#include "gpu/hardware_profile.h"
#include "tests/parity_accelerator.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

// Bytes that hold `fraction` of all (layer, expert) pairs: slots are sized for the largest
// expert (quantization mixes like Q4_K_M give some layers bigger experts).
uint64_t cache_bytes_for(const Model& m, double fraction) {
  uint64_t slot = 0;
  for (const LayerWeights& w : m.layers()) {
    slot = std::max<uint64_t>(
        slot, (w.gate_exps.n_bytes + w.up_exps.n_bytes + w.down_exps.n_bytes) / m.spec().n_expert);
  }
  const auto n_slots = static_cast<uint64_t>(fraction * m.spec().n_layer * m.spec().n_expert + 0.5);
  return n_slots * slot;
}

// Figures of an RTX 4090-class card (the results do not depend on them: only the sim's clock).
HardwareProfile sim_profile() {
  HardwareProfile p;
  p.name = "test-gpu";
  p.vram_bytes = uint64_t{24} << 30;
  p.hbm_gbps = 1008.0;
  p.fp32_tflops = 82.6;
  p.fp16_tflops = 165.2;
  p.bf16_tflops = 165.2;
  p.int8_tops = 330.3;
  p.pcie_gbps = 25.0;
  p.pcie_latency_us = 10.0;
  p.launch_overhead_us = 5.0;
  return p;
}

struct HybridCase {
  std::string model;
  double cached_fraction;
  WeightLayout layout = WeightLayout::File;
};

void PrintTo(const HybridCase& c, std::ostream* os) {
  *os << c.model << " cached " << c.cached_fraction
      << (c.layout == WeightLayout::Cpu ? " (CPU layout)" : "");
}

class HybridParity : public testing::TestWithParam<HybridCase> {};

TEST_P(HybridParity, AcceleratedEqualsCpuOnly) {
  TANDEM_REQUIRE_SHARED();
  const HybridCase& hc = GetParam();
  const auto model =
      Model::load(test::shared_path("models/" + hc.model + ".gguf"), GgufMemory::Read, hc.layout);
  if (hc.layout == WeightLayout::Cpu && cpu_features().has_avx512_kernels()) {
    EXPECT_GT(model->n_interleaved(), 0) << "no matrix was rearranged: the test would not cover it";
  }
  std::ifstream in(test::shared_path("golden/" + hc.model + ".json"));
  ASSERT_TRUE(in);
  const nlohmann::json golden = nlohmann::json::parse(in);

  EngineOptions cpu_opts;
  cpu_opts.n_ctx = 128;
  Engine cpu(*model, cpu_opts);

  const HardwareProfile profile = sim_profile();
  const uint64_t cache = cache_bytes_for(*model, hc.cached_fraction);
  TraceRecorder trace;
  uint64_t live_after = 1;
  {
    auto acc = test::make_parity_accelerator(profile, cache + (uint64_t{64} << 20), &trace);
    EngineOptions sim_opts = cpu_opts;
    sim_opts.accelerator = acc.get();
    sim_opts.expert_cache_bytes = cache;
    {
      Engine sim(*model, sim_opts);
      {
        test::AcceleratedParity parity(cpu, sim);
        for (const nlohmann::json& gc : golden["cases"]) {
          parity.run(gc["prompt"].get<std::vector<int32_t>>(), 8);
        }
      }
      const ExpertRunStats& st = sim.expert_stats();
      std::printf(
          "[ hybrid ] %s %s cached %.0f%%: %llu experts on the accelerator, %llu on the CPU\n",
          test::parity_accelerator_name(), hc.model.c_str(), 100 * hc.cached_fraction,
          static_cast<unsigned long long>(st.gpu_experts),
          static_cast<unsigned long long>(st.cpu_experts));
      if (hc.cached_fraction == 0.0) {
        EXPECT_EQ(st.gpu_experts, 0u);
      }
      if (hc.cached_fraction == 1.0) {
        EXPECT_EQ(st.cpu_experts, 0u);
      }
      if (hc.cached_fraction > 0.0 && hc.cached_fraction < 1.0) {
        EXPECT_GT(st.gpu_experts, 0u);
        EXPECT_GT(st.cpu_experts, 0u);
      }
    }
    live_after = acc->live_bytes();
  }
  EXPECT_EQ(live_after, 0u) << "the engine left device memory allocated";
}

INSTANTIATE_TEST_SUITE_P(
    Sim, HybridParity,
    testing::Values(HybridCase{"tiny-qwen3moe-f32", 0.0}, HybridCase{"tiny-qwen3moe-f32", 0.25},
                    HybridCase{"tiny-qwen3moe-f32", 1.0}, HybridCase{"tiny-qwen3moe-q8_0", 0.25},
                    HybridCase{"tiny-qwen3moe-q4_k_m", 0.25},
                    HybridCase{"tiny-qwen3moe-q4_k_m", 1.0}, HybridCase{"tiny-qwen2moe-f16", 0.25},
                    HybridCase{"tiny-mixtral-f16", 0.25}, HybridCase{"tiny-olmoe-f16", 0.25},
                    HybridCase{"tiny-qwen3moe-q8_0", 0.25, WeightLayout::Cpu},
                    HybridCase{"tiny-qwen3moe-q4_k_m", 0.25, WeightLayout::Cpu},
                    HybridCase{"tiny-qwen3moe-q4_k_m", 1.0, WeightLayout::Cpu}),
    [](const testing::TestParamInfo<HybridCase>& param_info) {
      std::string n = param_info.param.model + "_" +
                      std::to_string(static_cast<int>(param_info.param.cached_fraction * 100)) +
                      (param_info.param.layout == WeightLayout::Cpu ? "_cpu_layout" : "");
      for (char& c : n) c = std::isalnum(static_cast<unsigned char>(c)) ? c : '_';
      return n;
    });

}  // namespace
}  // namespace tandem
