// Host tests of the CUDA kernels' shared math (gpu/kernel_math.h): every function the device
// runs is checked here against the CPU reference (cpu/quant.h, cpu/ops.h), on random blocks of
// every weight type. Block-level results must match bit for bit; sums across blocks in a
// different order only within a tight tolerance.
#include "gpu/kernel_math.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

using namespace kmath;

float uniform(std::mt19937& rng, float lo, float hi) {
  return std::uniform_real_distribution<float>(lo, hi)(rng);
}

using test::random_floats;

// Gives a block of random bytes sane scale fields (no inf/NaN), keeping every quant random.
template <class T>
void fix_scales(typename T::Block& b, std::mt19937& rng) {
  constexpr GgmlType t = T::kType;
  if constexpr (t == GgmlType::F32) {
    b = uniform(rng, -2, 2);
  } else if constexpr (t == GgmlType::F16) {
    b = fp32_to_fp16(uniform(rng, -2, 2));
  } else if constexpr (t == GgmlType::BF16) {
    b = fp32_to_bf16(uniform(rng, -2, 2));
  } else if constexpr (t == GgmlType::MXFP4) {
    b.e = static_cast<uint8_t>(std::uniform_int_distribution<int>(0, 140)(rng));
  } else {
    b.d = fp32_to_fp16(uniform(rng, -0.05f, 0.05f));
    if constexpr (t == GgmlType::Q4_1 || t == GgmlType::Q5_1)
      b.m = fp32_to_fp16(uniform(rng, -1, 1));
    if constexpr (t == GgmlType::Q4_K || t == GgmlType::Q5_K)
      b.dmin = fp32_to_fp16(uniform(rng, 0, 0.05f));
  }
}

// n_blocks blocks: the first half quantized from random floats by the CPU (realistic blocks),
// the rest random bytes with sane scales (every bit pattern of quants and packed scales).
template <class T>
std::vector<typename T::Block> random_blocks(std::mt19937& rng, int n_blocks) {
  std::vector<typename T::Block> blocks(static_cast<size_t>(n_blocks));
  const int n_quantized = can_quantize(T::kType) ? n_blocks / 2 : 0;
  if (n_quantized > 0) {
    const std::vector<float> x = random_floats(rng, int64_t{n_quantized} * T::kElems);
    quantize_row(T::kType, x.data(), blocks.data(), static_cast<int64_t>(x.size()));
  }
  std::uniform_int_distribution<int> byte(0, 255);
  for (int i = n_quantized; i < n_blocks; ++i) {
    auto* p = reinterpret_cast<uint8_t*>(&blocks[static_cast<size_t>(i)]);
    for (size_t k = 0; k < sizeof(typename T::Block); ++k) p[k] = static_cast<uint8_t>(byte(rng));
    fix_scales<T>(blocks[static_cast<size_t>(i)], rng);
  }
  return blocks;
}

template <class T>
class KernelMathAllTypes : public ::testing::Test {};
template <class T>
class KernelMathQuantTypes : public ::testing::Test {};
template <class T>
class KernelMathFloatTypes : public ::testing::Test {};

using AllTypes = ::testing::Types<TypeF32, TypeF16, TypeBF16, TypeQ4_0, TypeQ4_1, TypeQ5_0,
                                  TypeQ5_1, TypeQ8_0, TypeQ4K, TypeQ5K, TypeQ6K, TypeMxfp4>;
using QuantTypes = ::testing::Types<TypeQ4_0, TypeQ4_1, TypeQ5_0, TypeQ5_1, TypeQ8_0, TypeQ4K,
                                    TypeQ5K, TypeQ6K, TypeMxfp4>;
using FloatTypes = ::testing::Types<TypeF32, TypeF16, TypeBF16>;
// The lists above must cover the kernels' type table.
#define TANDEM_COUNT_TYPE(name, traits) +1
static_assert(0 TANDEM_KMATH_FLOAT_TYPES(TANDEM_COUNT_TYPE) == 3);
static_assert(0 TANDEM_KMATH_QUANT_TYPES(TANDEM_COUNT_TYPE) == 9);
#undef TANDEM_COUNT_TYPE

class TypeNames {
 public:
  template <class T>
  static std::string GetName(int i) {
    return std::string(type_name(T::kType)) + "_" + std::to_string(i);
  }
};

TYPED_TEST_SUITE(KernelMathAllTypes, AllTypes, TypeNames);
TYPED_TEST_SUITE(KernelMathQuantTypes, QuantTypes, TypeNames);
TYPED_TEST_SUITE(KernelMathFloatTypes, FloatTypes, TypeNames);

TYPED_TEST(KernelMathAllTypes, DequantizeBlockEqualsCpuDequantizeRow) {
  using T = TypeParam;
  std::mt19937 rng(11);
  const int n_blocks = 64;
  const auto blocks = random_blocks<T>(rng, n_blocks);
  std::vector<float> want(static_cast<size_t>(n_blocks * T::kElems));
  dequantize_row(T::kType, blocks.data(), want.data(), static_cast<int64_t>(want.size()));
  std::vector<float> got(want.size());
  for (int i = 0; i < n_blocks; ++i) dequantize_block<T>(blocks[i], got.data() + i * T::kElems);
  for (size_t j = 0; j < want.size(); ++j) {
    ASSERT_EQ(float_bits(got[j]), float_bits(want[j]))
        << "element " << j << ": " << got[j] << " vs " << want[j];
  }
}

TYPED_TEST(KernelMathQuantTypes, DotBlockEqualsCpuVecDotRef) {
  using T = TypeParam;
  std::mt19937 rng(12);
  const int n_blocks = 48;
  const auto blocks = random_blocks<T>(rng, n_blocks);
  const int64_t n = int64_t{n_blocks} * T::kElems;
  for (int trial = 0; trial < 4; ++trial) {
    const std::vector<float> x = random_floats(rng, n, trial == 0 ? 1e-3f : 3.0f);
    std::vector<typename T::Act> act(static_cast<size_t>(n / (T::kElems == kQKK ? kQKK : kQK)));
    quantize_row(vec_dot_type(T::kType), x.data(), act.data(), n);
    // vec_dot_ref adds block results left to right; so does this loop.
    float got = 0;
    for (int i = 0; i < n_blocks; ++i) got += dot_block<T>(blocks[i], act[i]);
    const float want = vec_dot_ref(T::kType, n, blocks.data(), act.data());
    EXPECT_EQ(float_bits(got), float_bits(want)) << got << " vs " << want;
  }
}

TYPED_TEST(KernelMathQuantTypes, UnitPartialsSumToTheBlockInAnyGrouping) {
  // The GEMV kernel reduces K-quant unit partials across lanes in a tree; integer sums make the
  // grouping irrelevant, which this checks against a sequential sum.
  using T = TypeParam;
  std::mt19937 rng(13);
  const auto blocks = random_blocks<T>(rng, 8);
  const std::vector<float> x = random_floats(rng, 8 * T::kElems);
  std::vector<typename T::Act> act(8 * T::kElems / (T::kElems == kQKK ? kQKK : kQK));
  quantize_row(vec_dot_type(T::kType), x.data(), act.data(), static_cast<int64_t>(x.size()));
  for (int i = 0; i < 8; ++i) {
    int q[8] = {}, m[8] = {};
    for (int u = 0; u < T::kUnits; ++u) q[u] = T::dot_unit(blocks[i], act[i], u, &m[u]);
    for (int stride = 1; stride < 8; stride *= 2) {  // tree as the lanes' xor shuffles do
      for (int u = 0; u + stride < 8; u += 2 * stride) {
        q[u] += q[u + stride];
        m[u] += m[u + stride];
      }
    }
    EXPECT_EQ(float_bits(T::combine(blocks[i], act[i], q[0], m[0])),
              float_bits(dot_block<T>(blocks[i], act[i])));
  }
}

// The float types dot in f32 on the device (the CPU sums in double): close, not equal.
TYPED_TEST(KernelMathFloatTypes, RowDotCloseToCpu) {
  using T = TypeParam;
  std::mt19937 rng(14);
  const int n = 1000;
  const auto w = random_blocks<T>(rng, n);
  const std::vector<float> x = random_floats(rng, n);
  std::vector<typename T::Block> act(n);
  quantize_row(T::kType, x.data(), act.data(), n);
  float got = 0, abs_sum = 0;
  for (int i = 0; i < n; ++i) {
    const float p = T::value(w[i], 0) * T::round_act(x[i]);
    got += p;
    abs_sum += std::fabs(p);
  }
  EXPECT_NEAR(got, vec_dot_ref(T::kType, n, w.data(), act.data()), 1e-6f * abs_sum);
}

TEST(KernelMathActivations, Q8BlocksEqualCpuQuantizeRow) {
  std::mt19937 rng(21);
  for (int trial = 0; trial < 50; ++trial) {
    std::vector<float> x = random_floats(rng, kQKK, trial % 2 ? 1.0f : 100.0f);
    if (trial == 1) std::fill(x.begin(), x.end(), 0.0f);
    if (trial == 2) {  // exact ties: x * 127 / amax lands on .5
      for (int j = 0; j < kQKK; ++j) x[j] = static_cast<float>((j % 9) - 4) * 0.5f;
      x[0] = 127.0f;
    }
    if (trial == 3) x[17] = -1000.0f;  // negative extreme decides q8_K's sign
    BlockQ8_0 a0[kQKK / kQK], b0[kQKK / kQK];
    BlockQ8_1 a1[kQKK / kQK], b1[kQKK / kQK];
    BlockQ8K ak, bk;
    quantize_row(GgmlType::Q8_0, x.data(), a0, kQKK);
    quantize_row(GgmlType::Q8_1, x.data(), a1, kQKK);
    quantize_row(GgmlType::Q8_K, x.data(), &ak, kQKK);
    for (int i = 0; i < kQKK / kQK; ++i) {
      quantize_block_q8_0(x.data() + i * kQK, &b0[i]);
      quantize_block_q8_1(x.data() + i * kQK, &b1[i]);
    }
    quantize_block_q8_k(x.data(), &bk);
    EXPECT_EQ(std::memcmp(a0, b0, sizeof a0), 0) << "q8_0, trial " << trial;
    EXPECT_EQ(std::memcmp(a1, b1, sizeof a1), 0) << "q8_1, trial " << trial;
    EXPECT_EQ(std::memcmp(&ak, &bk, sizeof ak), 0) << "q8_K, trial " << trial;
  }
}

TEST(KernelMathScalars, Mxfp4AndE8m0MatchTheCpuTables) {
  for (int n = 0; n < 16; ++n) EXPECT_EQ(mxfp4_value(n), kMxfp4Values[n]) << n;
  for (int e = 0; e < 256; ++e) {
    EXPECT_EQ(float_bits(e8m0_half(static_cast<uint8_t>(e))),
              float_bits(e8m0_to_fp32_half(static_cast<uint8_t>(e))));
  }
  std::mt19937 rng(22);
  for (int i = 0; i < 10000; ++i) {
    const float f = uniform(rng, -4e6f, 4e6f) / static_cast<float>(1 << (i % 20));
    EXPECT_EQ(nearest_int_hd(f), nearest_int(f)) << f;
  }
  for (float f : {0.5f, 1.5f, 2.5f, -0.5f, -2.5f})
    EXPECT_EQ(nearest_int_hd(f), nearest_int(f)) << f;
}

TEST(KernelMathOps, SiluEqualsCpu) {
  std::mt19937 rng(31);
  for (int i = 0; i < 10000; ++i) {
    const float x = uniform(rng, -30, 30);
    EXPECT_EQ(float_bits(kmath::silu(x)), float_bits(tandem::silu(x))) << x;
  }
}

TEST(KernelMathOps, RmsNormEqualsCpu) {
  std::mt19937 rng(32);
  for (int64_t n : {1, 7, 64, 257, 2048}) {
    const std::vector<float> x = random_floats(rng, n, 5.0f), w = random_floats(rng, n);
    for (const float* pw : {w.data(), static_cast<const float*>(nullptr)}) {
      std::vector<float> want(static_cast<size_t>(n));
      tandem::rms_norm(x.data(), pw, n, 1e-6f, want.data());
      double sum_sq = 0;
      for (float v : x) sum_sq += static_cast<double>(v * v);
      const float scale = rms_scale(sum_sq, n, 1e-6f);
      for (int64_t i = 0; i < n; ++i) {
        ASSERT_EQ(float_bits(rms_apply(x[i], scale, pw, i)), float_bits(want[i]))
            << "n " << n << " i " << i;
      }
    }
  }
}

TEST(KernelMathOps, RopeEqualsCpu) {
  std::mt19937 rng(33);
  for (bool neox : {false, true}) {
    for (int64_t n_rot : {2, 32, 64, 128}) {
      const int64_t head_dim = 128;
      for (int32_t pos : {0, 1, 17, 4095, 100000}) {
        std::vector<float> want = random_floats(rng, head_dim);
        std::vector<float> got = want;
        tandem::rope(want.data(), n_rot, pos, 10000.0f, 0.5f, neox);
        const float theta_scale = rope_theta_scale(10000.0f, n_rot);
        for (int64_t i = 0; i < n_rot / 2; ++i) {
          const float angle = rope_angle(pos, theta_scale, 0.5f, i);
          int64_t a, b;
          rope_pair(i, n_rot, neox, &a, &b);
          rope_rotate(&got[a], &got[b], std::cos(angle), std::sin(angle));
        }
        for (int64_t i = 0; i < head_dim; ++i) {
          ASSERT_EQ(float_bits(got[i]), float_bits(want[i]))
              << "neox " << neox << " n_rot " << n_rot << " pos " << pos << " i " << i;
        }
      }
    }
  }
}

// Probabilities from the online softmax (split into chunks, then merged, as the attention kernel
// splits positions across warps) against the CPU's two-pass softmax.
TEST(KernelMathOps, OnlineSoftmaxMatchesCpuSoftmax) {
  std::mt19937 rng(34);
  for (int64_t n : {1, 2, 33, 500}) {
    for (int n_chunks : {1, 3, 4}) {
      const std::vector<float> scores = random_floats(rng, n, 20.0f);
      std::vector<float> want = scores;
      tandem::softmax(want.data(), n);
      // Accumulate a one-hot "value" per position so acc[p] is p's unnormalised probability.
      std::vector<SoftmaxState> states(static_cast<size_t>(n_chunks));
      std::vector<std::vector<float>> acc(static_cast<size_t>(n_chunks),
                                          std::vector<float>(static_cast<size_t>(n), 0.0f));
      for (int64_t p = 0; p < n; ++p) {
        const int c = static_cast<int>(p % n_chunks);
        float corr, prob;
        online_softmax_step(&states[c], scores[p], &corr, &prob);
        for (float& a : acc[c]) a *= corr;
        acc[c][p] += prob;
      }
      for (int c = 1; c < n_chunks; ++c) {
        float ca, cb;
        online_softmax_merge(&states[0], states[c], &ca, &cb);
        for (int64_t p = 0; p < n; ++p) acc[0][p] = acc[0][p] * ca + acc[c][p] * cb;
      }
      for (int64_t p = 0; p < n; ++p)
        EXPECT_NEAR(acc[0][p] / states[0].l, want[p], 1e-6f) << "n " << n << " p " << p;
    }
  }
}

// The device GEMV's order of work for one row (lanes take strided blocks, then a tree
// reduction), emulated on the host and compared with the CPU matmul on every quantized type.
template <class T>
float emulated_warp_row_dot(const typename T::Block* row, const typename T::Act* act,
                            int64_t n_blocks) {
  float lane_sum[32] = {};
  for (int lane = 0; lane < 32; ++lane) {
    for (int64_t u = lane; u < n_blocks * T::kUnits; u += 32) {
      // K-quants: the 8 lanes of a group each take one unit; the group's first lane combines.
      if (u % T::kUnits != 0) continue;
      const int64_t b = u / T::kUnits;
      lane_sum[lane] += dot_block<T>(row[b], act[b]);
    }
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    for (int lane = 0; lane < offset; ++lane) lane_sum[lane] += lane_sum[lane + offset];
  }
  return lane_sum[0];
}

TYPED_TEST(KernelMathQuantTypes, EmulatedGemvCloseToCpuMatmul) {
  using T = TypeParam;
  std::mt19937 rng(41);
  const int64_t n_rows = 7, n_blocks = 9, n_cols = n_blocks * T::kElems;
  const auto w = random_blocks<T>(rng, static_cast<int>(n_rows * n_blocks));
  const std::vector<float> x = random_floats(rng, n_cols);
  std::vector<float> want(static_cast<size_t>(n_rows));
  const int64_t stride = static_cast<int64_t>(n_blocks * sizeof(typename T::Block));
  matmul_ref(MatrixRef{T::kType, w.data(), n_rows, n_cols, stride}, x.data(), 1, want.data());
  std::vector<typename T::Act> act(static_cast<size_t>(n_blocks));
  quantize_row(vec_dot_type(T::kType), x.data(), act.data(), n_cols);
  for (int64_t r = 0; r < n_rows; ++r) {
    const float got = emulated_warp_row_dot<T>(w.data() + r * n_blocks, act.data(), n_blocks);
    EXPECT_NEAR(got, want[r], 1e-5f * (1.0f + std::fabs(want[r]))) << "row " << r;
  }
}

}  // namespace
}  // namespace tandem
