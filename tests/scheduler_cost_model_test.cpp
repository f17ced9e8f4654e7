// Cost model: roofline shape from a hardware profile, least-squares fits that recover known
// curves, online refit with a reported prediction error, and the profile JSON round trip.
#include <gtest/gtest.h>

#include <cmath>
#include <random>

#include "scheduler/cost_model.h"

namespace tandem::sched {
namespace {

HardwareSpec test_hardware() {
  HardwareSpec h;
  h.name = "test";
  h.has_gpu = true;
  h.gpu = {"gpu", 24, 1000, 80, 160, 160, 640, 25, 10, 5};
  h.cpu = {"cpu", 16, 128, 90, 9, 4.5, 2.2};
  return h;
}

TEST(CostModel, RooflineIsBandwidthBoundAtFewTokensComputeBoundAtMany) {
  const ModelShape shape = named_shape("qwen3-235b-a22b", "q4_k");
  const CostModel m = CostModel::from_hardware(test_hardware(), shape);
  // One expert: 3 * 4096 * 1536 weights at 144 / 256 bytes each.
  EXPECT_DOUBLE_EQ(m.expert_bytes(), 3.0 * 4096 * 1536 * 144 / 256);
  const double t1 = m.expert_us(Device::Cpu, 1), t2 = m.expert_us(Device::Cpu, 2);
  EXPECT_DOUBLE_EQ(t1, t2);  // both just stream the weights
  const double t256 = m.expert_us(Device::Cpu, 256), t512 = m.expert_us(Device::Cpu, 512);
  EXPECT_GT(t256, t1);
  EXPECT_NEAR((t512 - 3.0) / (t256 - 3.0), 2.0, 1e-9);  // linear in tokens past the kink
  EXPECT_LT(m.expert_us(Device::Gpu, 1), t1);
  // Copy: latency plus bytes at the PCIe rate.
  EXPECT_NEAR(m.copy_us(25e3), 10.0 + 1.0, 1e-9);
}

TEST(CostModel, FitRecoversAKnownCurveFromNoisySamples) {
  const ExpertCurve truth{4.0, 150.0, 2.5};
  std::mt19937_64 rng(3);
  std::normal_distribution<double> noise(1.0, 0.01);
  std::vector<Sample> samples;
  for (double n : {1, 2, 4, 8, 16, 32, 64, 128, 256, 512}) {
    for (int r = 0; r < 3; ++r) samples.push_back({n, truth.predict(n) * noise(rng)});
  }
  const ExpertCurve fit = ExpertCurve::fit(samples);
  for (double n : {1.0, 8.0, 60.0, 128.0, 512.0}) {
    EXPECT_NEAR(fit.predict(n) / truth.predict(n), 1.0, 0.03) << n << " tokens";
  }
  const CopyCurve copy_truth{12.0, 1.0 / 25e3};
  std::vector<Sample> copies;
  for (double bytes : {1e5, 1e6, 4e6, 1.6e7}) copies.push_back({bytes, copy_truth.predict(bytes)});
  const CopyCurve copy = CopyCurve::fit(copies);
  EXPECT_NEAR(copy.latency_us, 12.0, 1e-6);
  EXPECT_NEAR(copy.us_per_byte, 1.0 / 25e3, 1e-12);
}

TEST(CostModel, FitRejectsUnusableSamples) {
  EXPECT_THROW(ExpertCurve::fit({{1, 10}}), std::invalid_argument);
  EXPECT_THROW(ExpertCurve::fit({{1, 10}, {2, 0}}), std::invalid_argument);
  EXPECT_THROW(CopyCurve::fit({{1, -1}, {2, 3}}), std::invalid_argument);
}

TEST(CostModel, OnlineRefitConvergesAndReportsError) {
  const ModelShape shape = named_shape("qwen3-30b-a3b", "q8_0");
  CostModel m = CostModel::from_hardware(test_hardware(), shape);
  EXPECT_EQ(m.prediction_error(Device::Cpu), 0.0);
  // The machine is really twice as slow as the profile says.
  const ExpertCurve real{2 * 3.0, 2 * m.curve(Device::Cpu, "q8_0").fixed_us,
                         2 * m.curve(Device::Cpu, "q8_0").per_token_us};
  double first_error = -1;
  for (int i = 0; i < 400; ++i) {
    const double n = 1 << (i % 10);
    m.observe(Device::Cpu, n, real.predict(n));
    if (i == 0) first_error = m.prediction_error(Device::Cpu);
  }
  EXPECT_NEAR(first_error, 0.5, 0.05);  // predicted half the observed time
  EXPECT_LT(m.prediction_error(Device::Cpu), 0.05);
  EXPECT_EQ(m.n_observed(Device::Cpu), 400);
  for (double n : {1.0, 64.0, 512.0}) {
    EXPECT_NEAR(m.expert_us(Device::Cpu, n) / real.predict(n), 1.0, 0.02);
  }
}

// Decode observes one token at a time; thousands of those must not erase what the curve
// says about many tokens (the prompt's experts), only correct the one-token level.
TEST(CostModel, OneTokenObservationsKeepTheManyTokenShape) {
  CostModel m = CostModel::from_hardware(test_hardware(), named_shape("qwen3-30b-a3b", "q4_k"));
  const double at128 = m.expert_us(Device::Cpu, 128);
  const double one = 1.3 * m.expert_us(Device::Cpu, 1);
  for (int i = 0; i < 2000; ++i) m.observe(Device::Cpu, 1, one);
  EXPECT_NEAR(m.expert_us(Device::Cpu, 1) / one, 1.0, 0.05);
  EXPECT_NEAR(m.expert_us(Device::Cpu, 128) / at128, 1.0, 0.25);
  EXPECT_LT(m.prediction_error(Device::Cpu), 0.05);
}

TEST(CostModel, ProfileJsonRoundTrip) {
  const CostModel m =
      CostModel::from_hardware(test_hardware(), named_shape("mixtral-8x7b", "q4_k"));
  const CostModel back = CostModel::from_json(nlohmann::json::parse(m.to_json().dump()));
  for (double n : {1.0, 7.0, 300.0}) {
    EXPECT_DOUBLE_EQ(back.expert_us(Device::Cpu, n), m.expert_us(Device::Cpu, n));
    EXPECT_DOUBLE_EQ(back.expert_us(Device::Gpu, n), m.expert_us(Device::Gpu, n));
  }
  EXPECT_DOUBLE_EQ(back.expert_copy_us(), m.expert_copy_us());
  EXPECT_DOUBLE_EQ(back.dense_us(Device::Gpu, 1e6, 1e9), m.dense_us(Device::Gpu, 1e6, 1e9));
  nlohmann::json bad = m.to_json();
  bad["cpu"]["experts"]["q4_k"]["fixed_us"] = "fast";
  EXPECT_THROW(CostModel::from_json(bad), std::invalid_argument);
  EXPECT_THROW(CostModel::from_json(nlohmann::json::object()), std::invalid_argument);
}

TEST(CostModel, InterpolatedCurveFollowsAKernelSwitchAndRoundTrips) {
  // Flat below 16 tokens, then a cheaper per-token slope: a step no three-parameter curve fits.
  std::vector<Sample> samples;
  for (double n : {1.0, 4.0, 12.0, 16.0, 64.0}) {
    const double t = n < 16 ? 300 + 90 * n : 600 + 40 * n;
    samples.push_back({n, t * 1.02});
    samples.push_back({n, t});  // medians of two are their mean
    samples.push_back({n, t * 0.98});
  }
  const ExpertCurve c = ExpertCurve::interpolate(samples);
  ASSERT_EQ(c.points.size(), 5u);
  EXPECT_DOUBLE_EQ(c.predict(4), 300 + 90 * 4.0);
  EXPECT_DOUBLE_EQ(c.predict(8), (300 + 90 * 4.0 + 300 + 90 * 12.0) / 2);  // between 4 and 12
  EXPECT_DOUBLE_EQ(c.predict(40), 600 + 40 * 40.0);                        // between 16 and 64
  EXPECT_DOUBLE_EQ(c.predict(0.5), c.predict(1));                          // flat below the first
  EXPECT_DOUBLE_EQ(c.predict(128), 600 + 40 * 128.0);                      // last slope beyond
  CostModel m = CostModel::from_hardware(test_hardware(), named_shape("mixtral-8x7b", "q4_k"));
  m.set_curve(Device::Cpu, "q4_k", c);
  const CostModel back = CostModel::from_json(nlohmann::json::parse(m.to_json().dump()));
  for (double n : {1.0, 8.0, 20.0, 100.0}) {
    EXPECT_DOUBLE_EQ(back.expert_us(Device::Cpu, "q4_k", n), c.predict(n));
  }
  nlohmann::json bad = m.to_json();
  bad["cpu"]["experts"]["q4_k"]["points"] = {{4, 100}, {2, 50}};
  EXPECT_THROW(CostModel::from_json(bad), std::invalid_argument);
  EXPECT_THROW(ExpertCurve::interpolate({{4, 100}, {4, 110}}), std::invalid_argument);
}

}  // namespace
}  // namespace tandem::sched
