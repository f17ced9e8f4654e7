// Reference quantization: hand-built blocks, round trips, 16-bit float conversions, dot products,
// and dequantization of the shared GGUF models against their f32 twin.
#include <gtest/gtest.h>
#include <immintrin.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/half.h"
#include "cpu/quant.h"
#include "cpu/quant_blocks.h"
#include "engine/gguf.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

std::vector<float> dequant(GgmlType type, const void* src, int64_t n) {
  std::vector<float> out(static_cast<size_t>(n));
  dequantize_row(type, src, out.data(), n);
  return out;
}

std::vector<float> gaussian(int64_t n, uint32_t seed, float sigma = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, sigma);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

std::vector<uint8_t> quantize(GgmlType type, const std::vector<float>& x) {
  std::vector<uint8_t> out(static_cast<size_t>(row_bytes(type, static_cast<int64_t>(x.size()))));
  quantize_row(type, x.data(), out.data(), static_cast<int64_t>(x.size()));
  return out;
}

// ---------------------------------------------------------------- hand-made blocks

TEST(QuantDequant, Q4_0HandMade) {
  BlockQ4_0 b{};
  b.d = 0x3800;  // 0.5
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  const auto y = dequant(GgmlType::Q4_0, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], (j - 8) * 0.5f) << j;
    EXPECT_EQ(y[j + 16], (7 - j) * 0.5f) << j;
  }
}

TEST(QuantDequant, Q4_1HandMade) {
  BlockQ4_1 b{};
  b.d = 0x3400;  // 0.25
  b.m = 0xBC00;  // -1
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | (3 << 4));
  const auto y = dequant(GgmlType::Q4_1, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], j * 0.25f - 1.0f);
    EXPECT_EQ(y[j + 16], 3 * 0.25f - 1.0f);
  }
}

TEST(QuantDequant, Q5_0AndQ5_1HandMade) {
  BlockQ5_0 b{};
  b.d = 0x4000;    // 2
  b.qs[0] = 0x21;  // element 0 low = 1, element 16 low = 2
  b.qs[3] = 0x0F;  // element 3 low = 15
  const uint32_t qh = (1u << 0) | (1u << 16) | (1u << 31);
  std::memcpy(b.qh, &qh, 4);
  auto y = dequant(GgmlType::Q5_0, &b, 32);
  EXPECT_EQ(y[0], (17 - 16) * 2.0f);
  EXPECT_EQ(y[16], (18 - 16) * 2.0f);
  EXPECT_EQ(y[3], (15 - 16) * 2.0f);
  EXPECT_EQ(y[31], (16 - 16) * 2.0f);
  EXPECT_EQ(y[5], -32.0f);

  BlockQ5_1 c{};
  c.d = 0x3C00;    // 1
  c.m = 0x4200;    // 3
  c.qs[2] = 0xA0;  // element 18 low = 10
  const uint32_t qh1 = 1u << 18;
  std::memcpy(c.qh, &qh1, 4);
  y = dequant(GgmlType::Q5_1, &c, 32);
  EXPECT_EQ(y[18], 26.0f + 3.0f);
  EXPECT_EQ(y[2], 3.0f);
}

TEST(QuantDequant, Q8_0AndQ8_KHandMade) {
  BlockQ8_0 b{};
  b.d = 0x4000;  // 2
  for (int j = 0; j < 32; ++j) b.qs[j] = static_cast<int8_t>(j - 16);
  auto y = dequant(GgmlType::Q8_0, &b, 32);
  for (int j = 0; j < 32; ++j) EXPECT_EQ(y[j], (j - 16) * 2.0f);

  BlockQ8K k{};
  k.d = 0.25f;
  for (int j = 0; j < 256; ++j) k.qs[j] = static_cast<int8_t>(j - 128);
  y = dequant(GgmlType::Q8_K, &k, 256);
  for (int j = 0; j < 256; ++j) EXPECT_EQ(y[j], (j - 128) * 0.25f);
}

TEST(QuantDequant, Q4_KHandMade) {
  BlockQ4K b{};
  b.d = 0x3C00;     // 1
  b.dmin = 0x3800;  // 0.5
  b.scales[0] = 1;  // sub-block 0: scale 1
  b.scales[4] = 2;  //              min 2
  // Sub-block 5 (elements 160..191): scale 35 = 0b100011, min 17 = 0b010001.
  b.scales[9] = 0x13;    // low nibbles: scale 3, min 1
  b.scales[1] = 2 << 6;  // scale high bits
  b.scales[5] = 1 << 6;  // min high bits
  b.qs[0] = 7;           // element 0 (chunk 0, low nibble)
  b.qs[64 + 3] = 0x90;   // element 163 (chunk 2, high nibble)
  const auto y = dequant(GgmlType::Q4_K, &b, 256);
  EXPECT_EQ(y[0], 1.0f * 7 - 0.5f * 2);
  EXPECT_EQ(y[1], -1.0f);
  EXPECT_EQ(y[163], 35.0f * 9 - 0.5f * 17);
  EXPECT_EQ(y[160], -0.5f * 17);
  // Sub-block 1 uses scales[1] & 63 = 0 and scales[5] & 63 = 0.
  EXPECT_EQ(y[40], 0.0f);
}

TEST(QuantDequant, Q5_KHandMade) {
  BlockQ5K b{};
  b.d = 0x3C00;
  b.dmin = 0x3800;
  b.scales[9] = 0x13;
  b.scales[1] = 2 << 6;
  b.scales[5] = 1 << 6;
  b.qs[64 + 3] = 0x90;
  b.qh[3] = 1 << 5;  // fifth bit of element 163 (chunk 2, high half -> bit 5)
  b.qh[4] = 1 << 4;  // fifth bit of element 132 (chunk 2, low half -> bit 4), scale 0
  const auto y = dequant(GgmlType::Q5_K, &b, 256);
  EXPECT_EQ(y[163], 35.0f * 25 - 0.5f * 17);
  EXPECT_EQ(y[164], -0.5f * 17);
}

TEST(QuantDequant, Q6_KHandMade) {
  BlockQ6K b{};
  b.d = 0x3800;  // 0.5
  b.scales[0] = 2;
  b.scales[10] = -3;
  b.ql[0] = 0x05;
  b.qh[0] = 0x02;  // element 0 = 5 | 2 << 4 = 37 -> 5
  // Element 165 = second half, index 37 -> ql[64 + 37] low nibble, qh[32 + 5] bits 2-3.
  b.ql[64 + 37] = 0x0F;
  const auto y = dequant(GgmlType::Q6_K, &b, 256);
  EXPECT_EQ(y[0], 0.5f * 2 * 5);
  EXPECT_EQ(y[1], 0.5f * 2 * -32);
  EXPECT_EQ(y[165], 0.5f * -3 * (15 - 32));
  EXPECT_EQ(y[166], 0.5f * -3 * -32);
}

TEST(QuantDequant, Mxfp4HandMade) {
  const float e2m1[16] = {0, 0.5f, 1, 1.5f, 2, 3, 4, 6, -0.0f, -0.5f, -1, -1.5f, -2, -3, -4, -6};
  BlockMxfp4 b{};
  b.e = 127;  // 2^0
  for (int j = 0; j < 16; ++j) b.qs[j] = static_cast<uint8_t>(j | ((15 - j) << 4));
  auto y = dequant(GgmlType::MXFP4, &b, 32);
  for (int j = 0; j < 16; ++j) {
    EXPECT_EQ(y[j], e2m1[j]);
    EXPECT_EQ(y[j + 16], e2m1[15 - j]);
  }
  b.e = 130;  // 2^3
  y = dequant(GgmlType::MXFP4, &b, 32);
  EXPECT_EQ(y[7], 48.0f);
  b.e = 1;  // 2^-126: the halved scale is subnormal and must stay exact
  y = dequant(GgmlType::MXFP4, &b, 32);
  EXPECT_EQ(y[1], std::ldexp(0.5f, -126));
}

TEST(QuantDequant, FloatFormats) {
  const float f[2] = {1.5f, -2.25f};
  EXPECT_EQ(dequant(GgmlType::F32, f, 2), std::vector<float>({1.5f, -2.25f}));
  const uint16_t h[2] = {0x3E00, 0xC080};  // 1.5, -2.25 in f16
  EXPECT_EQ(dequant(GgmlType::F16, h, 2), std::vector<float>({1.5f, -2.25f}));
  const uint16_t bf[2] = {0x3FC0, 0xC010};  // 1.5, -2.25 in bf16
  EXPECT_EQ(dequant(GgmlType::BF16, bf, 2), std::vector<float>({1.5f, -2.25f}));
}

TEST(QuantDequant, RejectsPartialBlocks) {
  std::vector<uint8_t> buf(64);
  std::vector<float> out(40);
  EXPECT_THROW(dequantize_row(GgmlType::Q8_0, buf.data(), out.data(), 40), std::invalid_argument);
  EXPECT_THROW(quantize_row(GgmlType::Q4_K, out.data(), buf.data(), 40), std::invalid_argument);
}

// ---------------------------------------------------------------- activation rounding rules

TEST(QuantActivations, Q8_0TiesRoundToEven) {
  std::vector<float> x(32, 0.0f);
  x[0] = 127.0f;  // amax 127 -> multiplier exactly 1
  x[1] = 2.5f;
  x[2] = 3.5f;
  x[3] = -2.5f;
  x[4] = 0.5f;
  const auto q = quantize(GgmlType::Q8_0, x);
  BlockQ8_0 b;
  std::memcpy(&b, q.data(), sizeof b);
  EXPECT_EQ(fp16_to_fp32(b.d), 1.0f);
  EXPECT_EQ(b.qs[0], 127);
  EXPECT_EQ(b.qs[1], 2);
  EXPECT_EQ(b.qs[2], 4);
  EXPECT_EQ(b.qs[3], -2);
  EXPECT_EQ(b.qs[4], 0);
}

TEST(QuantActivations, Q8_0UsesMultiplierNotScale) {
  // amax = 3: id = 127/3 in float; x * id must be used, not x / d (d rounded to f16).
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-3.0f, 3.0f);
  std::vector<float> x(32);
  for (float& v : x) v = u(rng);
  x[5] = 3.0f;
  const auto q = quantize(GgmlType::Q8_0, x);
  BlockQ8_0 b;
  std::memcpy(&b, q.data(), sizeof b);
  const float id = 127.0f / 3.0f;
  for (int j = 0; j < 32; ++j) EXPECT_EQ(b.qs[j], static_cast<int>(std::nearbyint(x[j] * id)));
  EXPECT_EQ(b.d, fp32_to_fp16(3.0f / 127.0f));
}

TEST(QuantActivations, Q8_1SumTerm) {
  auto x = gaussian(64, 3);
  const auto q = quantize(GgmlType::Q8_1, x);
  for (int i = 0; i < 2; ++i) {
    BlockQ8_1 b;
    std::memcpy(&b, q.data() + i * sizeof b, sizeof b);
    float amax = 0;
    int sum = 0;
    for (int j = 0; j < 32; ++j) {
      amax = std::max(amax, std::fabs(x[i * 32 + j]));
      sum += b.qs[j];
    }
    EXPECT_EQ(b.s, fp32_to_fp16(amax / 127.0f * static_cast<float>(sum)));
  }
}

TEST(QuantActivations, Q8_KSignedMaxAndTies) {
  std::vector<float> x(256, 0.0f);
  x[10] = 127.0f;  // largest magnitude is positive -> iscale = -1, d = -1
  x[11] = 2.5f;
  x[12] = -3.5f;
  x[13] = -127.0f;  // same magnitude later: the first one wins
  const auto q = quantize(GgmlType::Q8_K, x);
  BlockQ8K b;
  std::memcpy(&b, q.data(), sizeof b);
  EXPECT_EQ(b.d, -1.0f);
  EXPECT_EQ(b.qs[10], -127);
  EXPECT_EQ(b.qs[11], -2);
  EXPECT_EQ(b.qs[12], 4);
  EXPECT_EQ(b.qs[13], 127);
  EXPECT_EQ(b.bsums[0], -127 - 2 + 4 + 127);
  for (int j = 1; j < 16; ++j) EXPECT_EQ(b.bsums[j], 0);
  const auto y = dequant(GgmlType::Q8_K, q.data(), 256);
  EXPECT_EQ(y[10], 127.0f);
}

// ---------------------------------------------------------------- round trips

struct RoundTripCase {
  GgmlType type;
  double max_rel_rms;  // rms error / rms of the data for N(0,1) rows
};

class QuantRoundTrip : public ::testing::TestWithParam<RoundTripCase> {};

TEST_P(QuantRoundTrip, ErrorWithinBound) {
  const RoundTripCase c = GetParam();
  const int64_t n = 4096;
  const auto x = gaussian(n, 11);
  const auto q = quantize(c.type, x);
  const auto y = dequant(c.type, q.data(), n);
  double err2 = 0, ref2 = 0;
  for (int64_t i = 0; i < n; ++i) {
    err2 += (x[i] - y[i]) * static_cast<double>(x[i] - y[i]);
    ref2 += x[i] * static_cast<double>(x[i]);
  }
  const double rel = std::sqrt(err2 / ref2);
  EXPECT_LE(rel, c.max_rel_rms) << type_name(c.type);
  // Quantizing the dequantized values again must be stable enough to give the same data back
  // within the same bound (catches packing bugs that a one-way round trip could hide).
  const auto q2 = quantize(c.type, y);
  const auto y2 = dequant(c.type, q2.data(), n);
  double err2b = 0;
  for (int64_t i = 0; i < n; ++i) err2b += (y2[i] - y[i]) * static_cast<double>(y2[i] - y[i]);
  EXPECT_LE(std::sqrt(err2b / ref2), c.max_rel_rms) << type_name(c.type);
}

// Bounds: about 1.5x the uniform-rounding error step/sqrt(12) of each format on Gaussian data.
INSTANTIATE_TEST_SUITE_P(
    AllTypes, QuantRoundTrip,
    ::testing::Values(RoundTripCase{GgmlType::F32, 0.0}, RoundTripCase{GgmlType::F16, 4e-4},
                      RoundTripCase{GgmlType::BF16, 3e-3}, RoundTripCase{GgmlType::Q8_0, 0.012},
                      RoundTripCase{GgmlType::Q8_1, 0.012}, RoundTripCase{GgmlType::Q8_K, 0.012},
                      RoundTripCase{GgmlType::Q4_0, 0.16}, RoundTripCase{GgmlType::Q4_1, 0.13},
                      RoundTripCase{GgmlType::Q5_0, 0.08}, RoundTripCase{GgmlType::Q5_1, 0.065},
                      RoundTripCase{GgmlType::Q4_K, 0.13}, RoundTripCase{GgmlType::Q5_K, 0.065},
                      RoundTripCase{GgmlType::Q6_K, 0.035}),
    [](const auto& p) { return std::string(type_name(p.param.type)); });

TEST(QuantRoundTripZero, AllZeroBlocks) {
  const std::vector<float> x(256, 0.0f);
  for (GgmlType t :
       {GgmlType::Q8_0, GgmlType::Q8_1, GgmlType::Q8_K, GgmlType::Q4_0, GgmlType::Q4_1,
        GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const auto q = quantize(t, x);
    for (float v : dequant(t, q.data(), 256)) ASSERT_EQ(v, 0.0f) << type_name(t);
  }
}

// ---------------------------------------------------------------- 16-bit floats

TEST(HalfFloat, Fp16RoundTripsEveryValue) {
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = fp16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(fp16_to_fp32(fp32_to_fp16(f)))) << h;
      continue;
    }
    ASSERT_EQ(fp32_to_fp16(f), h) << "half 0x" << std::hex << h;
  }
}

TEST(HalfFloat, Fp16SpecialValues) {
  EXPECT_EQ(fp16_to_fp32(0x0001), std::ldexp(1.0f, -24));  // smallest subnormal
  EXPECT_EQ(fp16_to_fp32(0x03FF), std::ldexp(1023.0f, -24));
  EXPECT_EQ(fp16_to_fp32(0x7BFF), 65504.0f);
  EXPECT_TRUE(std::isinf(fp16_to_fp32(0x7C00)));
  EXPECT_TRUE(std::isnan(fp16_to_fp32(0x7E00)));
  EXPECT_EQ(fp32_to_fp16(65520.0f), 0x7C00);  // halfway to 2^16 rounds to even = inf
  EXPECT_EQ(fp32_to_fp16(65519.0f), 0x7BFF);
  EXPECT_EQ(fp32_to_fp16(-INFINITY), 0xFC00);
  EXPECT_EQ(fp32_to_fp16(NAN) & 0x7C00, 0x7C00);
  EXPECT_NE(fp32_to_fp16(NAN) & 0x03FF, 0);
  EXPECT_EQ(fp32_to_fp16(std::ldexp(1.0f, -25)), 0x0000);  // tie between 0 and 2^-24 -> 0
  EXPECT_EQ(fp32_to_fp16(std::ldexp(3.0f, -25)), 0x0002);  // tie between 1 and 2 ulps -> 2
  EXPECT_EQ(fp32_to_fp16(-0.0f), 0x8000);
}

TEST(HalfFloat, Fp16TiesRoundToEven) {
  // Midpoints between consecutive finite halves are exact floats; they round to the even one.
  for (uint32_t h = 0; h < 0x7BFF; ++h) {
    const float lo = fp16_to_fp32(static_cast<uint16_t>(h));
    const float hi = fp16_to_fp32(static_cast<uint16_t>(h + 1));
    const float mid = (lo + hi) / 2;
    const uint32_t even = (h % 2 == 0) ? h : h + 1;
    ASSERT_EQ(fp32_to_fp16(mid), even) << "between 0x" << std::hex << h << " and next";
    ASSERT_EQ(fp32_to_fp16(-mid), even | 0x8000);
    ASSERT_EQ(fp32_to_fp16(std::nextafter(mid, 0.0f)), h);
    ASSERT_EQ(fp32_to_fp16(std::nextafter(mid, 1e9f)), h + 1);
  }
}

__attribute__((target("f16c"))) uint16_t hardware_fp16(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}

TEST(HalfFloat, Fp16MatchesF16cOnRandomBits) {
  if (!__builtin_cpu_supports("f16c")) GTEST_SKIP() << "CPU has no F16C";
  std::mt19937 rng(5);
  for (int i = 0; i < 2000000; ++i) {
    const float f = bits_float(static_cast<uint32_t>(rng()));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_fp16(f), hardware_fp16(f)) << f;
  }
}

TEST(HalfFloat, Bf16RoundingAndSpecials) {
  EXPECT_EQ(fp32_to_bf16(1.0f), 0x3F80);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F808000u)), 0x3F80);  // tie, even stays
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F818000u)), 0x3F82);  // tie, odd rounds up
  EXPECT_EQ(fp32_to_bf16(bits_float(0x3F808001u)), 0x3F81);
  EXPECT_EQ(fp32_to_bf16(INFINITY), 0x7F80);
  EXPECT_EQ(fp32_to_bf16(bits_float(0x7F7FFFFFu)), 0x7F80);    // max float rounds to inf
  EXPECT_EQ(fp32_to_bf16(bits_float(0x00018000u)), 0x0002);    // subnormal tie -> even
  const uint16_t nan = fp32_to_bf16(bits_float(0x7F800001u));  // NaN with low payload only
  EXPECT_TRUE(std::isnan(bf16_to_fp32(nan)));
  EXPECT_EQ(bf16_to_fp32(0xC040), -3.0f);
  for (uint32_t h = 0; h < 0x10000; ++h) {
    const float f = bf16_to_fp32(static_cast<uint16_t>(h));
    if (std::isnan(f)) continue;
    ASSERT_EQ(fp32_to_bf16(f), h);
  }
}

// ---------------------------------------------------------------- dot products

class QuantVecDot : public ::testing::TestWithParam<GgmlType> {};

TEST_P(QuantVecDot, EqualsDotOfDequantized) {
  const GgmlType wt = GetParam();
  const GgmlType at = vec_dot_type(wt);
  const int64_t n = 1024;
  for (uint32_t seed = 0; seed < 4; ++seed) {
    const auto wq = quantize(wt == GgmlType::MXFP4 ? GgmlType::F32 : wt, gaussian(n, seed));
    std::vector<uint8_t> w = wq;
    if (wt == GgmlType::MXFP4) {  // no quantizer: random bytes are valid mxfp4 blocks
      std::mt19937 rng(seed);
      w.assign(static_cast<size_t>(row_bytes(wt, n)), 0);
      for (auto& b : w) b = static_cast<uint8_t>(rng());
      for (int64_t i = 0; i < n / 32; ++i) w[i * 17] = static_cast<uint8_t>(120 + rng() % 10);
    }
    const auto a = quantize(at, gaussian(n, seed + 100));
    const auto wf = dequant(wt, w.data(), n);
    const auto af = dequant(at, a.data(), n);
    double expect = 0, magnitude = 0;
    for (int64_t i = 0; i < n; ++i) {
      expect += static_cast<double>(wf[i]) * af[i];
      magnitude += std::fabs(static_cast<double>(wf[i]) * af[i]);
    }
    const double got = vec_dot_ref(wt, n, w.data(), a.data());
    // q8_1 carries d*sum(q) as its own f16 value, so its min term differs by f16 rounding.
    const double tol = (at == GgmlType::Q8_1 ? 2e-3 : 1e-4) * magnitude;
    EXPECT_NEAR(got, expect, tol) << type_name(wt) << " seed " << seed;
  }
}

INSTANTIATE_TEST_SUITE_P(AllWeightTypes, QuantVecDot,
                         ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::BF16,
                                           GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                           GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::MXFP4,
                                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K),
                         [](const auto& p) { return std::string(type_name(p.param)); });

TEST(QuantVecDot, VecDotTypes) {
  EXPECT_EQ(vec_dot_type(GgmlType::F32), GgmlType::F32);
  EXPECT_EQ(vec_dot_type(GgmlType::BF16), GgmlType::BF16);
  EXPECT_EQ(vec_dot_type(GgmlType::Q4_0), GgmlType::Q8_0);
  EXPECT_EQ(vec_dot_type(GgmlType::MXFP4), GgmlType::Q8_0);
  EXPECT_EQ(vec_dot_type(GgmlType::Q5_1), GgmlType::Q8_1);
  EXPECT_EQ(vec_dot_type(GgmlType::Q6_K), GgmlType::Q8_K);
  EXPECT_THROW(vec_dot_type(GgmlType::Q2_K), std::invalid_argument);
}

// ---------------------------------------------------------------- real GGUF files

// Every tensor of `file` dequantizes close to the same tensor of the f32 file (same weights).
void expect_close_to_f32(const std::string& file, double max_rel_rms) {
  const auto ref = GgufFile::open(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  const auto other = GgufFile::open(test::shared_path("models/" + file));
  int n_checked = 0;
  for (const TensorView& t : other->tensors()) {
    const TensorView* r = ref->find_tensor(t.name);
    ASSERT_NE(r, nullptr) << t.name;
    ASSERT_EQ(r->n_elements(), t.n_elements()) << t.name;
    if (t.type == GgmlType::F32) continue;
    const auto got = dequant(t.type, t.data, t.n_elements());
    const auto* want = reinterpret_cast<const float*>(r->data);
    double err2 = 0, ref2 = 0;
    for (int64_t i = 0; i < t.n_elements(); ++i) {
      err2 += (got[i] - want[i]) * static_cast<double>(got[i] - want[i]);
      ref2 += want[i] * static_cast<double>(want[i]);
    }
    EXPECT_LE(std::sqrt(err2 / ref2), max_rel_rms)
        << file << " " << t.name << " " << type_name(t.type);
    ++n_checked;
  }
  EXPECT_GT(n_checked, 10) << file;
}

TEST(QuantRealFiles, F16AndBf16) {
  if (!test::have_shared()) {
    GTEST_SKIP() << "reference data not found at " << test::shared_dir();
  }
  expect_close_to_f32("tiny-qwen3moe-f16.gguf", 4e-4);
  expect_close_to_f32("tiny-qwen3moe-bf16.gguf", 3e-3);
}

TEST(QuantRealFiles, Q8_0AndQ4_0) {
  if (!test::have_shared()) {
    GTEST_SKIP() << "reference data not found at " << test::shared_dir();
  }
  expect_close_to_f32("tiny-qwen3moe-q8_0.gguf", 0.012);
  expect_close_to_f32("tiny-qwen3moe-q4_0.gguf", 0.16);
}

TEST(QuantRealFiles, KQuants) {
  if (!test::have_shared()) {
    GTEST_SKIP() << "reference data not found at " << test::shared_dir();
  }
  // Q4_K_M mixes Q4_K, Q5_K, Q6_K and Q8_0; llama-quantize's search beats our simple bound.
  expect_close_to_f32("tiny-qwen3moe-q4_k_m.gguf", 0.13);
  expect_close_to_f32("tiny-qwen3moe-q6_k.gguf", 0.035);
}

TEST(QuantRealFiles, ExpertTensorTypes) {
  if (!test::have_shared()) {
    GTEST_SKIP() << "reference data not found at " << test::shared_dir();
  }
  // The ffn_up_exps tensor of every file type holds the f32 file's weights.
  const auto ref = GgufFile::open(test::shared_path("models/tiny-qwen3moe-f32.gguf"));
  const TensorView* r = ref->find_tensor("blk.0.ffn_up_exps.weight");
  ASSERT_NE(r, nullptr);
  for (const char* f : {"q8_0", "q4_k_m", "q6_k", "bf16"}) {
    const auto file =
        GgufFile::open(test::shared_path(std::string("models/tiny-qwen3moe-") + f + ".gguf"));
    const TensorView* t = file->find_tensor("blk.0.ffn_up_exps.weight");
    ASSERT_NE(t, nullptr) << f;
    const auto got = dequant(t->type, t->data, t->n_elements());
    const auto* want = reinterpret_cast<const float*>(r->data);
    double max_err = 0;
    for (int64_t i = 0; i < t->n_elements(); ++i) {
      max_err = std::max(max_err, static_cast<double>(std::fabs(got[i] - want[i])));
    }
    // Weights are N(0, 0.02^2): the coarsest format here (q4_K) errs by well under 0.02.
    EXPECT_LT(max_err, 0.02) << f << " " << type_name(t->type);
  }
}

}  // namespace
}  // namespace tandem
