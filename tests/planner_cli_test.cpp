// `tandem sim` and `tandem plan` through the built binary: JSON output shape, the policy table,
// the Perfetto trace file, and refusals that name the numbers.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace {

struct CliResult {
  int rc = -1;
  std::string out, err;
};

class PlannerCli : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ =
        std::filesystem::temp_directory_path() / ("tandem_planner_cli_" + std::to_string(getpid()));
    std::filesystem::create_directories(dir_);
  }
  void TearDown() override { std::filesystem::remove_all(dir_); }

  CliResult tandem(const std::string& args) {
    const std::string o = (dir_ / "out").string(), e = (dir_ / "err").string();
    const std::string cmd = "cd " + std::string(TANDEM_SOURCE_DIR) + " && " + TANDEM_BINARY + " " +
                            args + " >" + o + " 2>" + e;
    CliResult r;
    const int status = std::system(cmd.c_str());
    r.rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    r.out = slurp(o);
    r.err = slurp(e);
    return r;
  }
  static std::string slurp(const std::string& path) {
    std::ifstream in(path);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
  std::string write(const std::string& name, const std::string& text) {
    const std::string p = (dir_ / name).string();
    std::ofstream(p) << text;
    return p;
  }
  std::filesystem::path dir_;
};

constexpr const char* kHw = "--hardware configs/hardware/rtx4090-ddr5-desktop.json";

TEST_F(PlannerCli, CalibratePrintsMeasuredAgainstPredictedAndWritesAProfile) {
  const std::string profile = (dir_ / "cost.json").string();
  const CliResult r = tandem(
      "calibrate --types q8_0 --fit-tokens 1,2,20 --check-tokens 1,16 "
      "--reps 1 --experts 2 -t 1 --tolerance 1000 -o " +
      profile);
  ASSERT_EQ(r.rc, 0) << r.out << r.err;
  EXPECT_NE(r.out.find("q8_0        16 "), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("every check within 1000%: yes"), std::string::npos) << r.out;
  const auto j = nlohmann::json::parse(slurp(profile));
  EXPECT_EQ(j["cpu"]["experts"]["q8_0"]["points"].size(), 3u);
  const CliResult sim = tandem(std::string("sim ") + kHw +
                               " --shape qwen3-30b-a3b --type q8_0 --policy cpu-experts "
                               "--prompt-tokens 16 --decode-tokens 4 -o json --cost-model " +
                               profile);
  ASSERT_EQ(sim.rc, 0) << sim.err;
  EXPECT_GT(nlohmann::json::parse(sim.out)["policies"][0]["decode_tokens_per_s"].get<double>(), 0);
  const CliResult broken =
      tandem(std::string("sim ") + kHw + " --shape qwen3-30b-a3b --cost-model " +
             write("broken.json", "{\"format\": 3"));
  EXPECT_NE(broken.rc, 0);
  EXPECT_NE(broken.err.find("broken.json' is not valid JSON"), std::string::npos) << broken.err;
  const CliResult bad = tandem("calibrate --types q9_9");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("unknown weight type 'q9_9'"), std::string::npos) << bad.err;
}

TEST_F(PlannerCli, SimJsonListsEveryPolicy) {
  const std::string trace = (dir_ / "trace.json").string();
  const CliResult r = tandem(std::string("sim ") + kHw +
                             " --shape qwen3-30b-a3b --expert-vram-gb 4 --decode-tokens 8"
                             " --prompt-tokens 64 -o json --trace-out " +
                             trace);
  ASSERT_EQ(r.rc, 0) << r.err;
  const nlohmann::json j = nlohmann::json::parse(r.out);
  ASSERT_EQ(j["policies"].size(), 5u);
  for (const auto& p : j["policies"]) {
    for (const char* key :
         {"policy", "decode_tokens_per_s", "prefill_tokens_per_s", "cache_hit_rate"}) {
      EXPECT_TRUE(p.contains(key)) << key;
    }
    EXPECT_GT(p["decode_tokens_per_s"].get<double>(), 0.0);
  }
  const nlohmann::json t = nlohmann::json::parse(slurp(trace));
  EXPECT_GT(t["traceEvents"].size(), 100u);
  EXPECT_EQ(j["prefetch_errors"], "routing");
  const std::string small =
      std::string("sim ") + kHw + " --shape qwen3-30b-a3b --decode-tokens 2 --prompt-tokens 16";
  const CliResult uniform = tandem(small + " --policy tandem --prefetch-errors uniform -o json");
  ASSERT_EQ(uniform.rc, 0) << uniform.err;
  EXPECT_EQ(nlohmann::json::parse(uniform.out)["prefetch_errors"], "uniform");
  const CliResult bad = tandem(small + " --prefetch-errors often");
  EXPECT_NE(bad.rc, 0);
  EXPECT_NE(bad.err.find("--prefetch-errors: unknown prefetch error model 'often'"),
            std::string::npos)
      << bad.err;
}

TEST_F(PlannerCli, SimTableAndRecordedRouting) {
  const std::string routing = (dir_ / "routing.jsonl").string();
  CliResult r = tandem(std::string("sim ") + kHw +
                       " --shape mixtral-8x7b --decode-tokens 4 --prompt-tokens 32 "
                       "--policy tandem --save-routing " +
                       routing);
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("tandem"), std::string::npos);
  // Replaying the saved routing gives the same predictions.
  const std::string again =
      std::string("sim ") + kHw + " --shape mixtral-8x7b --policy tandem -o json";
  const CliResult synthetic = tandem(again + " --decode-tokens 4 --prompt-tokens 32");
  const CliResult replayed = tandem(again + " --routing " + routing);
  ASSERT_EQ(replayed.rc, 0) << replayed.err;
  const auto a = nlohmann::json::parse(synthetic.out)["policies"][0];
  const auto b = nlohmann::json::parse(replayed.out)["policies"][0];
  for (const char* key : {"decode_tokens_per_s", "prefill_tokens_per_s", "cache_hit_rate"}) {
    EXPECT_NEAR(a[key].get<double>(), b[key].get<double>(), 1e-6 * a[key].get<double>()) << key;
  }
  r = tandem(std::string("sim ") + kHw + " --shape qwen3-30b-a3b --policy tandem --routing " +
             routing);
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("does not match model shape"), std::string::npos) << r.err;
}

TEST_F(PlannerCli, SimRejectsBadArguments) {
  EXPECT_EQ(tandem("sim --shape qwen3-30b-a3b").rc, 1);  // no hardware
  CliResult r = tandem(std::string("sim ") + kHw + " --shape qwen3-30b-a3b --expert-vram-gb 99");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("exceeds the"), std::string::npos) << r.err;
  r = tandem(std::string("sim ") + kHw + " --shape qwen3-30b-a3b --policy best");
  EXPECT_NE(r.err.find("unknown policy 'best'"), std::string::npos) << r.err;
  r = tandem(std::string("sim ") + kHw + " --shape qwen3-30b-a3b --defer-experts 8");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("--defer-experts 8 must be below the model's 8"), std::string::npos)
      << r.err;
  EXPECT_EQ(tandem("sim --help").rc, 0);
}

// Expert deferral in the sim: tandem defers and decodes faster; the baselines are unchanged.
TEST_F(PlannerCli, SimDeferralSpeedsUpTandemOnly) {
  const std::string base = std::string("sim ") + kHw +
                           " --shape qwen3-30b-a3b --expert-vram-gb 8 --decode-tokens 8 -o json";
  const auto off = nlohmann::json::parse(tandem(base).out)["policies"];
  const auto on = nlohmann::json::parse(tandem(base + " --defer-experts 2").out)["policies"];
  ASSERT_EQ(off.size(), on.size());
  for (size_t i = 0; i < off.size(); ++i) {
    if (off[i]["policy"] == "tandem") {
      EXPECT_GT(on[i]["decode_tokens_per_s"].get<double>(),
                off[i]["decode_tokens_per_s"].get<double>());
      EXPECT_GT(on[i]["decode"]["deferred_experts"].get<int>(), 0);
    } else {
      EXPECT_EQ(on[i]["decode_tokens_per_s"], off[i]["decode_tokens_per_s"]) << off[i]["policy"];
    }
  }
}

TEST_F(PlannerCli, PlanPrintsVramAndRefusesOversizedBudgets) {
  const std::string ok = write("ok.json", R"({"model": {"path": ""}, "gpu": {"device": "sim",
      "memory_budget_gb": 24, "hardware_profile": "configs/hardware/rtx4090-ddr5-desktop.json"},
      "scheduler": {"policy": "auto", "pin_layers": [0, 1]}, "server": {"port": 9}})");
  CliResult r = tandem("plan -c " + ok + " --shape qwen3-235b-a22b");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("expert slots"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("decode"), std::string::npos);
  r = tandem("plan -c " + ok + " --shape qwen3-235b-a22b -o json");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_EQ(nlohmann::json::parse(r.out)["policy"], "tandem");
  const std::string deferring = write("defer.json", R"({"gpu": {"device": "sim",
      "memory_budget_gb": 24, "hardware_profile": "configs/hardware/rtx4090-ddr5-desktop.json"},
      "scheduler": {"defer_experts": 2}})");
  r = tandem("plan -c " + deferring + " --shape qwen3-235b-a22b");
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("expert deferral 2"), std::string::npos) << r.out;
  const std::string big = write("big.json", R"({"gpu": {"device": "sim", "memory_budget_gb": 30,
      "hardware_profile": "configs/hardware/rtx4090-ddr5-desktop.json"}})");
  r = tandem("plan -c " + big + " --shape qwen3-235b-a22b");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("30.0 GB"), std::string::npos) << r.err;
  EXPECT_NE(r.err.find("24.0 GB"), std::string::npos) << r.err;
  r = tandem("plan -c " + ok + " --shape deepseek-v3 --type q8_0");
  EXPECT_EQ(r.rc, 1);
  EXPECT_NE(r.err.find("of host memory"), std::string::npos) << r.err;
}

TEST_F(PlannerCli, PlanReadsAGgufModel) {
  TANDEM_REQUIRE_SHARED();
  const std::string cfg = write("cpu.json", R"({"gpu": {"device": "none"}})");
  const CliResult r = tandem("plan -c " + cfg + " -m " +
                             tandem::test::shared_path("models/tiny-qwen3moe-q8_0.gguf"));
  ASSERT_EQ(r.rc, 0) << r.err;
  EXPECT_NE(r.out.find("q8_0"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("cpu-experts"), std::string::npos) << r.out;
}

}  // namespace
