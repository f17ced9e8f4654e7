// The hardware profile loader: fields and defaults, errors that name the problem, and every
// shipped profile (configs/hardware) driving a sim accelerator.
#include "gpu/hardware_profile.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <string>

#include "gpu/sim_accelerator.h"

namespace tandem {
namespace {

TEST(HardwareProfile, ParsesGpuSectionAndDefaults) {
  const HardwareProfile p = parse_hardware_profile(R"({"name": "desk", "gpu": {"name": "RTX X",
      "vram_gb": 24, "hbm_gbps": 1008, "fp16_tflops": 165, "int8_tops": 660,
      "pcie_gbps": 25, "pcie_latency_us": 10, "launch_overhead_us": 4}})",
                                                   "inline");
  EXPECT_EQ(p.name, "RTX X");
  EXPECT_EQ(p.vram_bytes, 24ull << 30);
  EXPECT_DOUBLE_EQ(p.hbm_gbps, 1008.0);
  EXPECT_DOUBLE_EQ(p.bf16_tflops, 165.0);      // defaults to fp16
  EXPECT_DOUBLE_EQ(p.fp32_tflops, 165.0 / 4);  // defaults to fp16 / 4
  EXPECT_DOUBLE_EQ(p.ops_per_us(GgmlType::Q4_K), 660e6);
  EXPECT_DOUBLE_EQ(p.launch_overhead_us, 4.0);
}

TEST(HardwareProfile, ErrorsNameTheProblem) {
  auto message = [](const std::string& text) {
    try {
      parse_hardware_profile(text, "bad.json");
    } catch (const HardwareProfileError& e) {
      return std::string(e.what());
    }
    return std::string("no error");
  };
  EXPECT_NE(message(R"({"gpu": {"fp16_tflops": 1, "pcie_gbps": 1}})").find("hbm_gbps"),
            std::string::npos);
  EXPECT_NE(message(R"({"gpu": {"hbm_gbps": "fast", "fp16_tflops": 1, "pcie_gbps": 1}})")
                .find("hbm_gbps"),
            std::string::npos);
  EXPECT_NE(
      message(R"({"gpu": {"hbm_gbps": -1, "fp16_tflops": 1, "pcie_gbps": 1}})").find("positive"),
      std::string::npos);
  EXPECT_NE(message("{not json").find("bad.json"), std::string::npos);
  EXPECT_THROW(load_hardware_profile("/nonexistent/profile.json"), HardwareProfileError);
}

// Every shipped profile loads and drives a sim accelerator.
TEST(HardwareProfile, ShippedProfilesLoad) {
  const std::filesystem::path dir =
      std::filesystem::path(TANDEM_SOURCE_DIR) / "configs" / "hardware";
  if (!std::filesystem::is_directory(dir)) GTEST_SKIP() << "no " << dir << " yet";
  int n_loaded = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json") continue;
    SCOPED_TRACE(entry.path().string());
    const HardwareProfile p = load_hardware_profile(entry.path().string());
    EXPECT_FALSE(p.name.empty());
    EXPECT_GT(p.vram_bytes, 0u);
    auto acc = make_sim_accelerator(p, 1 << 20, nullptr);
    EXPECT_EQ(acc->memory_budget(), 1u << 20);
    ++n_loaded;
  }
  if (n_loaded == 0) GTEST_SKIP() << "no profiles in " << dir;
}

}  // namespace
}  // namespace tandem
