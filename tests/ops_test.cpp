// Element-wise ops of the forward pass: the dispatched (AVX-512) forms against the scalar
// references, rms_norm against ggml's sequential sum, and the two-step RoPE against the
// one-call form.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "cpu/attention_kernels.h"
#include "cpu/cpu_features.h"
#include "cpu/half.h"
#include "cpu/ops.h"

namespace tandem {
namespace {

// n floats from N(0, scale^2): unbounded, so the larger scales reach e^x's clamp.
std::vector<float> normal_floats(std::mt19937& rng, size_t n, float scale) {
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// Relative error, with an absolute floor for results near zero (silu of very negative inputs).
void expect_close(float got, float want, float rel, const char* what, size_t i) {
  if (std::isnan(want)) {
    EXPECT_TRUE(std::isnan(got)) << what << "[" << i << "]";
    return;
  }
  if (std::isinf(want)) {
    EXPECT_EQ(got, want) << what << "[" << i << "]";
    return;
  }
  EXPECT_LE(std::fabs(got - want), rel * std::fabs(want) + 1e-30f)
      << what << "[" << i << "]: " << got << " vs " << want;
}

TEST(Ops, SwigluMatchesReference) {
  if (!cpu_features().has_avx512_kernels())
    GTEST_SKIP() << "no AVX-512 here: swiglu runs the reference";
  std::mt19937 rng(5);
  // Odd lengths run the masked tail; the scales reach the clamp of e^x (|x| > 103).
  for (size_t n : {1u, 15u, 16u, 17u, 257u, 6144u}) {
    for (float scale : {0.1f, 3.0f, 40.0f}) {
      std::vector<float> gate = normal_floats(rng, n, scale), up = normal_floats(rng, n, 1.0f);
      if (n > 8) {
        gate[0] = 0.0f;
        gate[1] = -0.0f;
        gate[2] = 150.0f;
        gate[3] = -150.0f;
        gate[4] = std::numeric_limits<float>::infinity();
        gate[5] = std::numeric_limits<float>::quiet_NaN();
        gate[6] = 1e-30f;
      }
      std::vector<float> got(n), want(n);
      swiglu(gate.data(), up.data(), static_cast<int64_t>(n), got.data());
      swiglu_ref(gate.data(), up.data(), static_cast<int64_t>(n), want.data());
      for (size_t i = 0; i < n; ++i) expect_close(got[i], want[i], 1e-6f, "swiglu", i);
      // In place, as the engine calls it (out aliases gate).
      swiglu(gate.data(), up.data(), static_cast<int64_t>(n), gate.data());
      for (size_t i = 0; i < n; ++i) EXPECT_EQ(std::isnan(gate[i]) || gate[i] == got[i], true) << i;
    }
  }
}

// rms_norm sums its squares in eight partial sums; ggml sums them in one chain. Both sums are in
// double, so the float results agree (to one ulp where the mean lands on a rounding boundary),
// for every length the unrolled loop and its tail can see.
TEST(Ops, RmsNormEqualsSequentialSum) {
  std::mt19937 rng(11);
  for (const int64_t n : {1, 7, 8, 9, 15, 128, 2047, 2048, 4096}) {
    for (const float scale : {1e-3f, 1.0f, 300.0f}) {
      const std::vector<float> x = normal_floats(rng, static_cast<size_t>(n), scale);
      const std::vector<float> w = normal_floats(rng, static_cast<size_t>(n), 1.0f);
      double sum = 0.0;
      for (const float v : x) sum += static_cast<double>(v * v);
      const float mean = static_cast<float>(sum / static_cast<double>(n));
      const float want_scale = 1.0f / std::sqrt(mean + 1e-6f);
      std::vector<float> y(static_cast<size_t>(n));
      rms_norm(x.data(), w.data(), n, 1e-6f, y.data());
      for (int64_t i = 0; i < n; ++i) {
        const float want = x[i] * want_scale * w[i];
        expect_close(y[i], want, 3 * std::numeric_limits<float>::epsilon(), "rms_norm", i);
      }
    }
  }
}

TEST(Ops, RopeInTwoStepsEqualsRope) {
  std::mt19937 rng(6);
  for (bool neox : {false, true}) {
    for (int64_t n_rot : {2, 64, 128}) {
      for (int32_t pos : {0, 1, 37, 4095}) {
        const std::vector<float> head = normal_floats(rng, 128, 1.0f);
        std::vector<float> one = head, two = head, cos_sin(static_cast<size_t>(n_rot));
        rope(one.data(), n_rot, pos, 1e6f, 0.5f, neox);
        rope_angles(n_rot, pos, 1e6f, 0.5f, cos_sin.data());
        rope_rotate(two.data(), n_rot, cos_sin.data(), neox);
        for (size_t i = 0; i < head.size(); ++i) ASSERT_EQ(one[i], two[i]) << i;
        for (size_t i = static_cast<size_t>(n_rot); i < head.size(); ++i)
          ASSERT_EQ(one[i], head[i]) << "dims past n_rot must not move";
      }
    }
  }
}

// Rows through f16 (values stored into an f16 cache, the query it sees): the AVX-512
// conversion equals the scalar one for normal values, halfway cases, the subnormal range,
// overflow to infinity, signed zeros and NaN, at lengths that leave a masked tail.
TEST(Ops, Fp16ConversionsEqualReference) {
  if (!cpu_features().has_avx512_kernels())
    GTEST_SKIP() << "no AVX-512 here: the rows run the reference";
  std::mt19937 rng(12);
  std::vector<float> x = normal_floats(rng, 1000, 3.0f);
  for (const float scale : {1e-5f, 1e-7f, 3e4f, 7e4f}) {
    for (const float v : normal_floats(rng, 200, scale)) x.push_back(v);
  }
  const float inf = std::numeric_limits<float>::infinity();
  for (const float v : {0.0f, -0.0f, 65504.0f, 65519.0f, 65520.0f, -65520.0f, inf, -inf,
                        std::numeric_limits<float>::quiet_NaN(), 1.0f + 1.0f / 2048,
                        1.0f + 3.0f / 2048, 5.96e-8f, 2.98e-8f, 2.99e-8f}) {
    x.push_back(v);
  }
  for (const size_t n : {x.size(), size_t{1}, size_t{15}, size_t{17}}) {
    std::vector<float> got(n), want(n);
    round_fp16_row(x.data(), static_cast<int64_t>(n), got.data());
    round_fp16_row_ref(x.data(), static_cast<int64_t>(n), want.data());
    std::vector<uint16_t> got_bits(n + 1, 0xabcd), want_bits(n);
    to_fp16_row(x.data(), static_cast<int64_t>(n), got_bits.data());
    to_fp16_row_ref(x.data(), static_cast<int64_t>(n), want_bits.data());
    EXPECT_EQ(got_bits[n], 0xabcd) << "wrote past the end";
    for (size_t i = 0; i < n; ++i) {
      if (std::isnan(want[i])) {
        EXPECT_TRUE(std::isnan(got[i])) << i;
        EXPECT_TRUE(std::isnan(fp16_to_fp32(got_bits[i]))) << i;
        continue;
      }
      EXPECT_EQ(float_bits(got[i]), float_bits(want[i])) << i << ": " << x[i];
      EXPECT_EQ(got_bits[i], want_bits[i]) << i << ": " << x[i];
    }
  }
}

TEST(Ops, AttentionKernelsMatchReference) {
  const AttentionKernels& fast = attention_kernels();
  const AttentionKernels& ref = attention_kernels_ref();
  if (&fast == &ref) GTEST_SKIP() << "no AVX-512 here: attention runs the reference";
  std::mt19937 rng(7);
  for (int64_t dim : {64, 80, 128}) {
    for (int64_t n_pos : {1, 17, 300}) {
      const int64_t stride = 2 * dim + 16;
      const std::vector<float> q = normal_floats(rng, static_cast<size_t>(dim), 1.0f);
      const std::vector<float> k = normal_floats(rng, static_cast<size_t>(stride * n_pos), 1.0f);
      std::vector<float> got(static_cast<size_t>(n_pos)), want(got.size());
      fast.scores_f32(q.data(), k.data(), stride, n_pos, dim, 0.125f, got.data());
      ref.scores_f32(q.data(), k.data(), stride, n_pos, dim, 0.125f, want.data());
      SCOPED_TRACE("dim " + std::to_string(dim) + ", " + std::to_string(n_pos) + " positions");
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5f) << i;
      fast.softmax(got.data(), n_pos);
      ref.softmax(want.data(), n_pos);
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-6f) << i;
      std::vector<float> out_fast(static_cast<size_t>(dim)), out_ref(out_fast.size());
      fast.weighted_sum_f32(want.data(), k.data(), stride, n_pos, dim, out_fast.data());
      ref.weighted_sum_f32(want.data(), k.data(), stride, n_pos, dim, out_ref.data());
      for (size_t i = 0; i < out_fast.size(); ++i) EXPECT_NEAR(out_fast[i], out_ref[i], 1e-5f) << i;
      // The same with an f16 cache.
      std::vector<uint16_t> k16(k.size());
      for (size_t i = 0; i < k.size(); ++i) k16[i] = fp32_to_fp16(k[i]);
      fast.scores_f16(q.data(), k16.data(), stride, n_pos, dim, 0.125f, got.data());
      ref.scores_f16(q.data(), k16.data(), stride, n_pos, dim, 0.125f, want.data());
      for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], want[i], 1e-5f) << "f16 " << i;
      ref.softmax(want.data(), n_pos);
      fast.weighted_sum_f16(want.data(), k16.data(), stride, n_pos, dim, out_fast.data());
      ref.weighted_sum_f16(want.data(), k16.data(), stride, n_pos, dim, out_ref.data());
      for (size_t i = 0; i < out_fast.size(); ++i)
        EXPECT_NEAR(out_fast[i], out_ref[i], 1e-5f) << "f16 " << i;
    }
  }
}

// The grouped kernel reads each cached row once for all heads of a group; it must give exactly
// what the three per-head kernels give (the sim's attention and the CPU's agree bit for bit
// through them), for odd head counts, head sizes, and lengths around its 16-row blocks and its
// 256-row value passes.
TEST(Ops, GroupedAttentionEqualsPerHeadKernels) {
  std::mt19937 rng(11);
  for (const AttentionKernels* kern : {&attention_kernels(), &attention_kernels_ref()}) {
    for (int64_t dim : {64, 80, 128}) {
      for (int64_t n_rep : {1, 3, 8, 12}) {
        for (int64_t n_pos : {1, 15, 16, 17, 300, 600}) {
          SCOPED_TRACE("dim " + std::to_string(dim) + ", " + std::to_string(n_rep) + " heads, " +
                       std::to_string(n_pos) + " positions");
          const int64_t stride = 3 * dim;  // the group's head inside wider cache rows
          const std::vector<float> q = normal_floats(rng, static_cast<size_t>(n_rep * dim), 1.0f);
          const std::vector<float> k =
              normal_floats(rng, static_cast<size_t>(stride * n_pos), 1.0f);
          const std::vector<float> v =
              normal_floats(rng, static_cast<size_t>(stride * n_pos), 1.0f);
          std::vector<uint16_t> k16(k.size()), v16(v.size());
          for (size_t i = 0; i < k.size(); ++i) {
            k16[i] = fp32_to_fp16(k[i]);
            v16[i] = fp32_to_fp16(v[i]);
          }
          const size_t n_out = static_cast<size_t>(n_rep * dim);
          std::vector<float> scratch(static_cast<size_t>(n_rep * n_pos));
          std::vector<float> got(n_out), want(n_out), head_scores(static_cast<size_t>(n_pos));
          for (bool f16 : {false, true}) {
            if (f16) {
              kern->attend_heads_f16(q.data(), n_rep, k16.data() + dim, v16.data() + dim, stride,
                                     n_pos, dim, 0.1f, scratch.data(), got.data());
            } else {
              kern->attend_heads_f32(q.data(), n_rep, k.data() + dim, v.data() + dim, stride, n_pos,
                                     dim, 0.1f, scratch.data(), got.data());
            }
            for (int64_t r = 0; r < n_rep; ++r) {
              const float* qr = q.data() + r * dim;
              float* out = want.data() + r * dim;
              if (f16) {
                kern->scores_f16(qr, k16.data() + dim, stride, n_pos, dim, 0.1f,
                                 head_scores.data());
                kern->softmax(head_scores.data(), n_pos);
                kern->weighted_sum_f16(head_scores.data(), v16.data() + dim, stride, n_pos, dim,
                                       out);
              } else {
                kern->scores_f32(qr, k.data() + dim, stride, n_pos, dim, 0.1f, head_scores.data());
                kern->softmax(head_scores.data(), n_pos);
                kern->weighted_sum_f32(head_scores.data(), v.data() + dim, stride, n_pos, dim, out);
              }
            }
            for (size_t i = 0; i < n_out; ++i)
              ASSERT_EQ(got[i], want[i]) << (f16 ? "f16 " : "") << i;
          }
        }
      }
    }
  }
}

}  // namespace
}  // namespace tandem
