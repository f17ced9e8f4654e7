// The interleaved CPU layout (cpu/interleave.h): the rearrangement is lossless, products over it
// equal the file layout's (bit for bit where both use the 16-row arithmetic, within the kernel
// tolerance where the file layout uses the row kernel), and it never leaks into files.
#include <gtest/gtest.h>

#include <array>
#include <cmath>
#include <cstring>
#include <random>
#include <vector>

#include "cpu/arena.h"
#include "cpu/cpu_features.h"
#include "cpu/interleave.h"
#include "cpu/matmul.h"
#include "cpu/quant.h"
#include "engine/model.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

struct Q4KMatrix {
  int64_t n_rows, n_cols;
  std::vector<uint8_t> file;         // Q4_K rows as in a GGUF file
  std::vector<uint8_t> interleaved;  // the same rows as Q4_K_X16
  MatrixRef file_ref() const {
    return {GgmlType::Q4_K, file.data(), n_rows, n_cols, row_bytes(GgmlType::Q4_K, n_cols)};
  }
  MatrixRef interleaved_ref() const {
    return {GgmlType::Q4_K_X16, interleaved.data(), n_rows, n_cols,
            row_bytes(GgmlType::Q4_K, n_cols)};
  }
};

Q4KMatrix make_matrix(int64_t n_rows, int64_t n_cols, uint32_t seed) {
  Q4KMatrix m{n_rows, n_cols, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t rb = row_bytes(GgmlType::Q4_K, n_cols);
  m.file.resize(static_cast<size_t>(rb * n_rows));
  std::vector<float> row(static_cast<size_t>(n_cols));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (float& v : row) v = dist(rng) * (r % 5 == 0 ? 0.01f : 1.0f);
    quantize_row(GgmlType::Q4_K, row.data(), m.file.data() + r * rb, n_cols);
  }
  m.interleaved = m.file;
  interleave_rows(GgmlType::Q4_K, m.interleaved.data(), n_rows, n_cols);
  return m;
}

std::vector<float> activations(int64_t n_cols, int64_t n_tokens, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n_cols * n_tokens));
  for (float& v : x) v = dist(rng);
  return x;
}

std::vector<float> product(const MatrixRef& w, const std::vector<float>& x, int64_t n_tokens,
                           CpuArena* arena) {
  std::vector<float> y(static_cast<size_t>(w.n_rows * n_tokens), NAN);
  matmul(w, x.data(), n_tokens, y.data(), arena);
  return y;
}

bool has_kernel() {
  return cpu_features().has_avx512_kernels();
}

TEST(Interleave, RoundTripIsLossless) {
  const Q4KMatrix m = make_matrix(48, 512, 1);
  EXPECT_NE(m.interleaved, m.file);  // it did move bytes
  EXPECT_EQ(m.interleaved.size(), m.file.size());
  std::vector<uint8_t> back = m.interleaved;
  deinterleave_rows(GgmlType::Q4_K_X16, back.data(), m.n_rows, m.n_cols);
  EXPECT_EQ(back, m.file);
  // Rows of one group onwards, as the reference paths copy them.
  const int64_t rb = row_bytes(GgmlType::Q4_K, m.n_cols);
  std::vector<uint8_t> tail(static_cast<size_t>(20 * rb));
  copy_rows_deinterleaved(m.interleaved_ref(), 16, 36, tail.data());
  EXPECT_EQ(std::memcmp(tail.data(), m.file.data() + 16 * rb, tail.size()), 0);
  EXPECT_THROW(copy_rows_deinterleaved(m.interleaved_ref(), 8, 16, tail.data()),
               std::invalid_argument);
}

TEST(Interleave, OnlyWholeGroupsOfTypesWithALayout) {
  EXPECT_THROW(interleave_rows(GgmlType::Q4_K, nullptr, 40, 256), std::invalid_argument);
  EXPECT_FALSE(worth_interleaving(GgmlType::Q4_K, 40));
  EXPECT_FALSE(worth_interleaving(GgmlType::Q4_K, 0));
  EXPECT_FALSE(worth_interleaving(GgmlType::Q8_0, 64));
  EXPECT_EQ(worth_interleaving(GgmlType::Q4_K, 64), has_kernel());
  EXPECT_EQ(file_type_of(GgmlType::Q4_K_X16), GgmlType::Q4_K);
  EXPECT_EQ(file_type_of(GgmlType::Q6_K), GgmlType::Q6_K);
}

TEST(Interleave, MemoryLayoutsAreNotFileTypes) {
  EXPECT_FALSE(type_traits(static_cast<uint32_t>(GgmlType::Q4_K_X16)).has_value());
  EXPECT_FALSE(parse_type_name("q4_K_x16").has_value());
  EXPECT_EQ(traits(GgmlType::Q4_K_X16).block_bytes, traits(GgmlType::Q4_K).block_bytes);
  EXPECT_EQ(row_bytes(GgmlType::Q4_K_X16, 2048), row_bytes(GgmlType::Q4_K, 2048));
}

// 16..257 tokens: both layouts run the 16-row strips, so results are identical.
TEST(Interleave, ManyTokensEqualTheFileLayoutExactly) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  CpuArena arena(2);
  for (auto [rows, cols, tokens] :
       {std::array<int64_t, 3>{16, 256, 16}, {48, 768, 17}, {32, 2048, 257}}) {
    const Q4KMatrix m = make_matrix(rows, cols, static_cast<uint32_t>(rows + tokens));
    const auto x = activations(cols, tokens, 7);
    EXPECT_EQ(product(m.interleaved_ref(), x, tokens, &arena),
              product(m.file_ref(), x, tokens, &arena))
        << rows << "x" << cols << ", " << tokens << " tokens";
  }
}

// Few tokens run straight from the interleaved weights: each token's result equals the strips'
// (the same token inside a 17-token product), for any row split.
TEST(Interleave, FewTokensEqualTheStripsExactly) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  const Q4KMatrix m = make_matrix(64, 1024, 3);
  const int64_t n = 17;
  const auto x = activations(m.n_cols, n, 11);
  CpuArena arena(2);
  const auto batch = product(m.interleaved_ref(), x, n, &arena);
  for (int64_t count : {1, 3, 5}) {
    for (CpuArena* a : {static_cast<CpuArena*>(nullptr), &arena}) {
      const std::vector<float> xs(x.begin(), x.begin() + count * m.n_cols);
      const auto few = product(m.interleaved_ref(), xs, count, a);
      for (int64_t i = 0; i < count * m.n_rows; ++i) {
        ASSERT_EQ(few[i], batch[i]) << count << " tokens, element " << i;
      }
    }
  }
}

// Against the scalar reference of the file layout, relative to sum |w * x|.
TEST(Interleave, MatchesTheReference) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  const Q4KMatrix m = make_matrix(32, 768, 5);
  for (int64_t tokens : {1, 2, 4, 257}) {
    const auto x = activations(m.n_cols, tokens, 13);
    const auto got = product(m.interleaved_ref(), x, tokens, nullptr);
    std::vector<float> want(got.size()), ref_x(got.size());
    matmul_ref(m.file_ref(), x.data(), tokens, want.data());
    // The interleaved reference path (deinterleave, then the scalar code) is the same.
    matmul_ref(m.interleaved_ref(), x.data(), tokens, ref_x.data());
    EXPECT_EQ(ref_x, want);
    std::vector<float> wf(static_cast<size_t>(m.n_cols));
    for (int64_t r = 0; r < m.n_rows; ++r) {
      dequantize_row(GgmlType::Q4_K, m.file.data() + r * row_bytes(GgmlType::Q4_K, m.n_cols),
                     wf.data(), m.n_cols);
      for (int64_t t = 0; t < tokens; ++t) {
        double mag = 0;
        for (int64_t i = 0; i < m.n_cols; ++i) mag += std::fabs(wf[i] * x[t * m.n_cols + i]);
        ASSERT_NEAR(got[t * m.n_rows + r], want[t * m.n_rows + r], 2e-3 * mag)
            << "row " << r << " token " << t << " of " << tokens;
      }
    }
  }
}

TEST(Interleave, BatchedProductsEqualSingleOnes) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  const Q4KMatrix a = make_matrix(48, 512, 21), b = make_matrix(80, 512, 22);
  const auto x = activations(512, 1, 23);
  CpuArena arena(2);
  std::vector<float> ya(48), yb(80);
  const MatmulJob jobs[] = {{a.interleaved_ref(), x.data(), 1, ya.data()},
                            {b.interleaved_ref(), x.data(), 1, yb.data()}};
  matmul_many(jobs, &arena);
  EXPECT_EQ(ya, product(a.interleaved_ref(), x, 1, nullptr));
  EXPECT_EQ(yb, product(b.interleaved_ref(), x, 1, nullptr));
}

TEST(Interleave, RejectsPartialGroups) {
  const Q4KMatrix m = make_matrix(32, 256, 9);
  MatrixRef bad = m.interleaved_ref();
  bad.n_rows = 24;
  std::vector<float> x(256, 1.0f), y(24);
  EXPECT_THROW(matmul(bad, x.data(), 1, y.data(), nullptr), std::invalid_argument);
}


// The CPU layout rearranges the Q4_K matrices that are only multiplied, and nothing else; the
// file's own tensor table still describes the file.
TEST(InterleaveModel, CpuLayoutRearrangesOnlyMultipliedQ4KMatrices) {
  TANDEM_REQUIRE_SHARED();
  const std::string path = test::shared_path("models/tiny-qwen3moe-q4_k_m.gguf");
  const auto file_layout = Model::load(path, GgufMemory::Read, WeightLayout::File);
  const auto cpu_layout = Model::load(path, GgufMemory::Read, WeightLayout::Cpu);
  const auto mapped = Model::load(path, GgufMemory::Map, WeightLayout::Cpu);
  EXPECT_EQ(file_layout->n_interleaved(), 0);
  EXPECT_EQ(mapped->n_interleaved(), 0);  // a mapping is never written
  if (!has_kernel()) {
    EXPECT_EQ(cpu_layout->n_interleaved(), 0);
    GTEST_SKIP() << "no AVX-512 VNNI on this CPU: nothing is rearranged";
  }
  EXPECT_EQ(cpu_layout->token_embd().type, file_layout->token_embd().type);
  int n_seen = 0;
  for (size_t il = 0; il < cpu_layout->layers().size(); ++il) {
    const LayerWeights &a = file_layout->layers()[il], &b = cpu_layout->layers()[il];
    for (auto [fa, fb] : {std::pair{&a.wq, &b.wq}, {&a.wk, &b.wk}, {&a.wv, &b.wv}, {&a.wo, &b.wo},
                          {&a.gate_exps, &b.gate_exps}, {&a.up_exps, &b.up_exps},
                          {&a.down_exps, &b.down_exps}}) {
      const bool moved = fa->type == GgmlType::Q4_K && fa->ne[1] % kInterleaveRows == 0;
      EXPECT_EQ(fb->type, moved ? GgmlType::Q4_K_X16 : fa->type) << fb->name;
      EXPECT_EQ(fb->n_bytes, fa->n_bytes);
      EXPECT_EQ(cpu_layout->file().find_tensor(fb->name)->type, fa->type) << fb->name;
      if (moved) {
        std::vector<uint8_t> back(fb->data, fb->data + fb->n_bytes);
        deinterleave_rows(fb->type, back.data(), fb->ne[1] * fb->ne[2], fb->ne[0]);
        EXPECT_EQ(std::memcmp(back.data(), fa->data, back.size()), 0) << fb->name;
        ++n_seen;
      }
    }
  }
  const TensorView &out_a = file_layout->output(), &out_b = cpu_layout->output();
  const bool out_moved = out_a.data != file_layout->token_embd().data &&
                         out_a.type == GgmlType::Q4_K && out_a.ne[1] % kInterleaveRows == 0;
  EXPECT_EQ(out_b.type, out_moved ? GgmlType::Q4_K_X16 : out_a.type);
  EXPECT_EQ(n_seen + (out_moved ? 1 : 0), cpu_layout->n_interleaved());
  EXPECT_GT(n_seen, 0);
}

}  // namespace
}  // namespace tandem
