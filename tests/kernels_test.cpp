// Every SIMD kernel (AVX-512 and AVX2 tables) against the scalar reference on random inputs,
// for odd shapes: rows not a multiple of the row block, 1..5 and 257 tokens, odd block counts.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "cpu/quant.h"

namespace tandem {
namespace {

struct Problem {
  GgmlType type;
  int64_t n_rows, n_cols, n_tokens;
  std::vector<uint8_t> w;
  std::vector<float> x;
  MatrixRef ref() const { return {type, w.data(), n_rows, n_cols, row_bytes(type, n_cols)}; }
};

Problem make_problem(GgmlType type, int64_t n_rows, int64_t n_cols, int64_t n_tokens,
                     uint32_t seed) {
  Problem p{type, n_rows, n_cols, n_tokens, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> wf(static_cast<size_t>(n_cols));
  p.w.resize(static_cast<size_t>(row_bytes(type, n_cols) * n_rows));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (float& v : wf) v = dist(rng) * (r % 3 == 0 ? 0.02f : 1.0f);
    quantize_row(type, wf.data(), p.w.data() + r * row_bytes(type, n_cols), n_cols);
  }
  p.x.resize(static_cast<size_t>(n_cols * n_tokens));
  for (float& v : p.x) v = dist(rng);
  // Exact ties and a zero token exercise the activation rounding and zero blocks.
  if (n_tokens > 1) {
    for (int64_t i = 0; i < n_cols; ++i) p.x[n_cols + i] = static_cast<float>(i % 9) - 4.0f;
  }
  if (n_tokens > 2) std::fill(p.x.begin() + 2 * n_cols, p.x.begin() + 3 * n_cols, 0.0f);
  return p;
}

// Sum of |w_i * a_i| over the dequantized operands: the scale rounding errors are relative to.
std::vector<double> magnitudes(const Problem& p) {
  const GgmlType at = vec_dot_type(p.type);
  std::vector<uint8_t> aq(static_cast<size_t>(row_bytes(at, p.n_cols)));
  std::vector<float> af(static_cast<size_t>(p.n_cols)), wf(static_cast<size_t>(p.n_cols));
  std::vector<double> m(static_cast<size_t>(p.n_rows * p.n_tokens));
  for (int64_t t = 0; t < p.n_tokens; ++t) {
    quantize_row(at, p.x.data() + t * p.n_cols, aq.data(), p.n_cols);
    dequantize_row(at, aq.data(), af.data(), p.n_cols);
    for (int64_t r = 0; r < p.n_rows; ++r) {
      dequantize_row(p.type, p.w.data() + r * row_bytes(p.type, p.n_cols), wf.data(), p.n_cols);
      double s = 0;
      for (int64_t i = 0; i < p.n_cols; ++i) s += std::fabs(static_cast<double>(wf[i]) * af[i]);
      m[t * p.n_rows + r] = s;
    }
  }
  return m;
}

std::vector<float> run_kernel(const FastKernel& k, const Problem& p) {
  std::vector<uint8_t> buf(static_cast<size_t>(act_pack_bytes(k.layout, p.n_cols, p.n_tokens)) +
                           64);
  uint8_t* aligned = buf.data() + (64 - reinterpret_cast<uintptr_t>(buf.data()) % 64) % 64;
  ActPack act;
  pack_activations(k.layout, p.x.data(), p.n_cols, p.n_tokens, 0, p.n_tokens, aligned, &act);
  std::vector<float> y(static_cast<size_t>(p.n_rows * p.n_tokens), NAN);
  // Two row ranges and two token ranges, as threads would split them.
  const int64_t r_mid = p.n_rows / 2, t_mid = p.n_tokens / 2;
  for (auto [r0, r1] : {std::pair{int64_t{0}, r_mid}, std::pair{r_mid, p.n_rows}}) {
    for (auto [t0, t1] : {std::pair{int64_t{0}, t_mid}, std::pair{t_mid, p.n_tokens}}) {
      k.run(p.ref(), act, r0, r1, t0, t1, y.data(), p.n_rows);
    }
  }
  return y;
}

void expect_matches_reference(const FastKernel& k, GgmlType type, double rel_tol) {
  const int64_t block = traits(type).block_elems;
  // Column counts: one block, odd block counts, and a large row; 257 tokens on a small shape.
  const std::vector<std::array<int64_t, 3>> shapes = {
      {1, block == 1 ? 37 : block, 1},
      {17, block == 1 ? 100 : 3 * block, 3},
      {33, block == 1 ? 256 : 5 * block, 5},
      {5, block == 1 ? 64 : 2 * block, 257},
      {19, 2048, 2},
  };
  uint32_t seed = 1;
  for (const auto& s : shapes) {
    const Problem p = make_problem(type, s[0], s[1], s[2], seed++);
    const auto got = run_kernel(k, p);
    std::vector<float> want(got.size());
    matmul_ref(p.ref(), p.x.data(), p.n_tokens, want.data());
    const auto mag = magnitudes(p);
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_NEAR(got[i], want[i], rel_tol * mag[i] + 1e-30)
          << k.name << " shape " << s[0] << "x" << s[1] << " tokens " << s[2] << " element " << i;
    }
  }
}

constexpr double kTol = 2e-5;  // float summation order differs; products are exact integers

TEST(Kernels, Avx512MatchReference) {
  if (!detect_cpu_features().has_avx512_kernels()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const bool bf16 = detect_cpu_features().avx512bf16;
  int n_tested = 0;
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0,
                     GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const FastKernel* k = avx512_kernel(t, bf16);
    if (!k) {
      EXPECT_TRUE(t == GgmlType::BF16 && !bf16) << "no AVX-512 kernel for " << type_name(t);
      continue;
    }
    SCOPED_TRACE(k->name);
    expect_matches_reference(*k, t, kTol);
    ++n_tested;
  }
  EXPECT_GE(n_tested, 7);
}

TEST(Kernels, Avx2MatchReference) {
  if (!detect_cpu_features().has_avx2_kernels()) GTEST_SKIP() << "no AVX2/FMA/F16C on this CPU";
  for (GgmlType t : {GgmlType::F32, GgmlType::F16, GgmlType::Q8_0}) {
    const FastKernel* k = avx2_kernel(t);
    ASSERT_NE(k, nullptr) << type_name(t);
    SCOPED_TRACE(k->name);
    expect_matches_reference(*k, t, kTol);
  }
}

TEST(Kernels, ExtremeQuantValues) {
  // Weights at the ends of their ranges (q8_0 -127..127 with full-scale activations) must not
  // saturate the 16-bit intermediate sums.
  if (!detect_cpu_features().has_avx2_kernels()) GTEST_SKIP() << "no SIMD kernels";
  for (GgmlType t :
       {GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K}) {
    const FastKernel* k = find_fast_kernel(t, detect_cpu_features());
    if (!k) continue;
    Problem p = make_problem(t, 3, 512, 2, 99);
    std::vector<float> wf(512);
    for (int64_t r = 0; r < 3; ++r) {
      for (int i = 0; i < 512; ++i) wf[i] = (i + r) % 2 ? 1.0f : -1.0f;
      quantize_row(t, wf.data(), p.w.data() + r * row_bytes(t, 512), 512);
    }
    for (int i = 0; i < 1024; ++i) p.x[i] = (i % 2 ? 1.0f : -1.0f) * (i < 512 ? 1.0f : -1.0f);
    const auto got = run_kernel(*k, p);
    std::vector<float> want(got.size());
    matmul_ref(p.ref(), p.x.data(), p.n_tokens, want.data());
    for (size_t i = 0; i < got.size(); ++i) {
      EXPECT_NEAR(got[i], want[i], 1e-4 * (std::fabs(want[i]) + 1)) << k->name << " " << i;
    }
  }
}

TEST(Kernels, ActivationQuantizersMatchReferenceBytes) {
  // The vectorised q8_0 / q8_K quantizers must write exactly the reference bytes: random rows,
  // rows of exact rounding ties, all-zero rows, a row whose largest magnitude is negative and
  // repeated (q8_K takes the first one's sign), and tiny and huge magnitudes.
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  constexpr int64_t n = 1024;
  std::vector<std::vector<float>> rows;
  for (float scale : {1.0f, 1e-6f, 3e4f}) {
    std::vector<float> r(n);
    for (float& v : r) v = dist(rng) * scale;
    rows.push_back(r);
  }
  std::vector<float> ties(n), zeros(n, 0.0f), signs(n);
  // Each block starts with 127, so the scale is exactly 1 (q8_K: -1) and every x.5 is a tie.
  for (int64_t i = 0; i < n; ++i)
    ties[i] = i % 32 == 0 ? 127.0f : static_cast<float>(i % 61) - 29.5f;
  for (int64_t i = 0; i < n; ++i) signs[i] = (i % 7 == 3) ? (i % 2 ? 5.0f : -5.0f) : 0.5f * (i % 5);
  rows.insert(rows.end(), {ties, zeros, signs});
  for (GgmlType t : {GgmlType::Q8_0, GgmlType::Q8_K}) {
    const int64_t bytes = row_bytes(t, n);
    for (size_t r = 0; r < rows.size(); ++r) {
      std::vector<uint8_t> want(static_cast<size_t>(bytes)), got(static_cast<size_t>(bytes), 0xAB);
      quantize_row(t, rows[r].data(), want.data(), n);
      quantize_activation_row(t, rows[r].data(), got.data(), n);
      EXPECT_EQ(got, want) << type_name(t) << " row " << r;
    }
  }
}

}  // namespace
}  // namespace tandem
