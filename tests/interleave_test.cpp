// The interleaved CPU layout (cpu/interleave.h): the rearrangement is lossless, products over it
// equal the file layout's (bit for bit where both use the 16-row arithmetic, within the kernel
// tolerance where the file layout uses the row kernel), and it never leaks into files.
#include <gtest/gtest.h>

#include <algorithm>
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
#include "cpu/quant_blocks.h"
#include "engine/model.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

// The types with an interleaved layout, and row lengths both accept.
constexpr std::array<GgmlType, 2> kLayoutTypes = {GgmlType::Q4_K, GgmlType::Q8_0};

struct QuantMatrix {
  GgmlType type;
  int64_t n_rows, n_cols;
  std::vector<uint8_t> file;         // rows as in a GGUF file
  std::vector<uint8_t> interleaved;  // the same rows in the interleaved layout
  MatrixRef file_ref() const {
    return {type, file.data(), n_rows, n_cols, row_bytes(type, n_cols)};
  }
  MatrixRef interleaved_ref() const {
    return {*interleaved_type(type), interleaved.data(), n_rows, n_cols, row_bytes(type, n_cols)};
  }
};

QuantMatrix make_matrix(GgmlType type, int64_t n_rows, int64_t n_cols, uint32_t seed) {
  QuantMatrix m{type, n_rows, n_cols, {}, {}};
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  const int64_t rb = row_bytes(type, n_cols);
  m.file.resize(static_cast<size_t>(rb * n_rows));
  std::vector<float> row(static_cast<size_t>(n_cols));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (float& v : row) v = dist(rng) * (r % 5 == 0 ? 0.01f : 1.0f);
    quantize_row(type, row.data(), m.file.data() + r * rb, n_cols);
  }
  m.interleaved = m.file;
  interleave_rows(type, m.interleaved.data(), n_rows, n_cols);
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
  for (GgmlType type : kLayoutTypes) {
    const QuantMatrix m = make_matrix(type, 48, 512, 1);
    EXPECT_NE(m.interleaved, m.file);  // it did move bytes
    EXPECT_EQ(m.interleaved.size(), m.file.size());
    std::vector<uint8_t> back = m.interleaved;
    deinterleave_rows(*interleaved_type(type), back.data(), m.n_rows, m.n_cols);
    EXPECT_EQ(back, m.file) << traits(type).name;
    // Rows of one group onwards, as the reference paths copy them.
    const int64_t rb = row_bytes(type, m.n_cols);
    std::vector<uint8_t> tail(static_cast<size_t>(20 * rb));
    copy_rows_deinterleaved(m.interleaved_ref(), 16, 36, tail.data());
    EXPECT_EQ(std::memcmp(tail.data(), m.file.data() + 16 * rb, tail.size()), 0);
    EXPECT_THROW(copy_rows_deinterleaved(m.interleaved_ref(), 8, 16, tail.data()),
                 std::invalid_argument);
  }
}

// Q8_0_X16 as documented (cpu/interleave.h): pair p of a group is block 2p's quants of the 16
// rows word by word, then block 2p + 1's, then the two blocks' scales.
TEST(Interleave, Q8_0GroupLayoutIsAsDocumented) {
  const QuantMatrix m = make_matrix(GgmlType::Q8_0, 16, 128, 4);
  const auto* rows = reinterpret_cast<const BlockQ8_0*>(m.file.data());
  const int64_t nb = 4;
  for (int64_t r = 0; r < 16; ++r) {
    for (int64_t i = 0; i < nb; ++i) {
      const BlockQ8_0& blk = rows[r * nb + i];
      const uint8_t* pair = m.interleaved.data() + (i / 2) * 1088;
      uint16_t d;
      std::memcpy(&d, pair + 1024 + (i % 2) * 32 + 2 * r, 2);
      ASSERT_EQ(d, blk.d) << "row " << r << " block " << i;
      for (int64_t k = 0; k < 8; ++k) {
        ASSERT_EQ(std::memcmp(pair + (i % 2) * 512 + (k * 16 + r) * 4, blk.qs + 4 * k, 4), 0)
            << "row " << r << " block " << i << " word " << k;
      }
    }
  }
}

TEST(Interleave, OnlyWholeGroupsOfTypesWithALayout) {
  EXPECT_THROW(interleave_rows(GgmlType::Q4_K, nullptr, 40, 256), std::invalid_argument);
  EXPECT_THROW(interleave_rows(GgmlType::Q6_K, nullptr, 16, 256), std::invalid_argument);
  // Q8_0 pairs its blocks: a row of 3 blocks has no layout.
  std::vector<uint8_t> odd(static_cast<size_t>(16 * row_bytes(GgmlType::Q8_0, 96)));
  EXPECT_THROW(interleave_rows(GgmlType::Q8_0, odd.data(), 16, 96), std::invalid_argument);
  EXPECT_FALSE(worth_interleaving(GgmlType::Q8_0, 16, 96));
  EXPECT_FALSE(worth_interleaving(GgmlType::Q4_K, 40, 256));
  EXPECT_FALSE(worth_interleaving(GgmlType::Q4_K, 0, 256));
  EXPECT_FALSE(worth_interleaving(GgmlType::Q6_K, 64, 256));
  EXPECT_EQ(worth_interleaving(GgmlType::Q4_K, 64, 256), has_kernel());
  EXPECT_EQ(worth_interleaving(GgmlType::Q8_0, 64, 128), has_kernel());
  EXPECT_EQ(file_type_of(GgmlType::Q4_K_X16), GgmlType::Q4_K);
  EXPECT_EQ(file_type_of(GgmlType::Q8_0_X16), GgmlType::Q8_0);
  EXPECT_EQ(file_type_of(GgmlType::Q6_K), GgmlType::Q6_K);
}

TEST(Interleave, MemoryLayoutsAreNotFileTypes) {
  for (GgmlType type : kLayoutTypes) {
    const GgmlType x = *interleaved_type(type);
    EXPECT_FALSE(type_traits(static_cast<uint32_t>(x)).has_value());
    EXPECT_FALSE(parse_type_name(traits(x).name).has_value());
    EXPECT_EQ(traits(x).block_bytes, traits(type).block_bytes);
    EXPECT_EQ(row_bytes(x, 2048), row_bytes(type, 2048));
  }
}

// 16..257 tokens: both layouts run the 16-row strips, so results are identical.
TEST(Interleave, ManyTokensEqualTheFileLayoutExactly) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  CpuArena arena(2);
  for (GgmlType type : kLayoutTypes) {
    for (auto [rows, cols, tokens] :
         {std::array<int64_t, 3>{16, 256, 16}, {48, 768, 17}, {32, 2048, 257}}) {
      const QuantMatrix m = make_matrix(type, rows, cols, static_cast<uint32_t>(rows + tokens));
      const auto x = activations(cols, tokens, 7);
      EXPECT_EQ(product(m.interleaved_ref(), x, tokens, &arena),
                product(m.file_ref(), x, tokens, &arena))
          << traits(type).name << " " << rows << "x" << cols << ", " << tokens << " tokens";
    }
  }
}

// Few tokens run straight from the interleaved weights: each token's result equals the strips'
// (the same token inside a 17-token product), for any row split.
TEST(Interleave, FewTokensEqualTheStripsExactly) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  for (GgmlType type : kLayoutTypes) {
    const QuantMatrix m = make_matrix(type, 64, 1024, 3);
    const int64_t n = 17;
    const auto x = activations(m.n_cols, n, 11);
    CpuArena arena(2);
    const auto batch = product(m.interleaved_ref(), x, n, &arena);
    for (int64_t count : {1, 2, 3, 5, 6, 7}) {  // every tail after the 4-token tiles
      for (CpuArena* a : {static_cast<CpuArena*>(nullptr), &arena}) {
        const std::vector<float> xs(x.begin(), x.begin() + count * m.n_cols);
        const auto few = product(m.interleaved_ref(), xs, count, a);
        for (int64_t i = 0; i < count * m.n_rows; ++i) {
          ASSERT_EQ(few[i], batch[i])
              << traits(type).name << ", " << count << " tokens, element " << i;
        }
      }
    }
  }
}

// Against the scalar reference of the file layout, relative to sum |w * x|.
TEST(Interleave, MatchesTheReference) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  for (GgmlType type : kLayoutTypes) {
    const QuantMatrix m = make_matrix(type, 32, 768, 5);
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
        dequantize_row(type, m.file.data() + r * row_bytes(type, m.n_cols), wf.data(), m.n_cols);
        for (int64_t t = 0; t < tokens; ++t) {
          double mag = 0;
          for (int64_t i = 0; i < m.n_cols; ++i) mag += std::fabs(wf[i] * x[t * m.n_cols + i]);
          ASSERT_NEAR(got[t * m.n_rows + r], want[t * m.n_rows + r], 2e-3 * mag)
              << traits(type).name << " row " << r << " token " << t << " of " << tokens;
        }
      }
    }
  }
}

TEST(Interleave, BatchedProductsEqualSingleOnes) {
  if (!has_kernel()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU: no interleaved kernel";
  const QuantMatrix a = make_matrix(GgmlType::Q4_K, 48, 512, 21),
                    b = make_matrix(GgmlType::Q8_0, 80, 512, 22);
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
  for (GgmlType type : kLayoutTypes) {
    const QuantMatrix m = make_matrix(type, 32, 256, 9);
    MatrixRef bad = m.interleaved_ref();
    bad.n_rows = 24;
    std::vector<float> x(256, 1.0f), y(24);
    EXPECT_THROW(matmul(bad, x.data(), 1, y.data(), nullptr), std::invalid_argument);
  }
  // A q8_0 row of an odd number of blocks is no group of pairs.
  const QuantMatrix m = make_matrix(GgmlType::Q8_0, 16, 128, 9);
  MatrixRef odd = m.interleaved_ref();
  odd.n_cols = 96;
  odd.row_stride = row_bytes(GgmlType::Q8_0, 96);
  std::vector<float> x(96, 1.0f), y(16);
  EXPECT_THROW(matmul(odd, x.data(), 1, y.data(), nullptr), std::invalid_argument);
}

// Whether the CPU layout should rearrange a matrix of this file type and shape.
bool has_layout(const TensorView& t) {
  if (t.ne[1] % kInterleaveRows != 0) return false;
  return t.type == GgmlType::Q4_K || (t.type == GgmlType::Q8_0 && t.ne[0] % 64 == 0);
}

// The CPU layout rearranges the Q4_K and Q8_0 matrices that are only multiplied, and nothing
// else; the file's own tensor table still describes the file.
class InterleaveModel : public ::testing::TestWithParam<const char*> {};

TEST_P(InterleaveModel, CpuLayoutRearrangesOnlyMultipliedMatrices) {
  TANDEM_REQUIRE_SHARED();
  const std::string path = test::shared_path(std::string("models/") + GetParam());
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
    for (auto [fa, fb] : {std::pair{&a.wq, &b.wq},
                          {&a.wk, &b.wk},
                          {&a.wv, &b.wv},
                          {&a.wo, &b.wo},
                          {&a.gate_exps, &b.gate_exps},
                          {&a.up_exps, &b.up_exps},
                          {&a.down_exps, &b.down_exps}}) {
      const bool moved = has_layout(*fa);
      EXPECT_EQ(fb->type, moved ? *interleaved_type(fa->type) : fa->type) << fb->name;
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
  const bool out_moved = out_a.data != file_layout->token_embd().data && has_layout(out_a);
  EXPECT_EQ(out_b.type, out_moved ? *interleaved_type(out_a.type) : out_a.type);
  EXPECT_EQ(n_seen + (out_moved ? 1 : 0), cpu_layout->n_interleaved());
  EXPECT_GT(n_seen, 0);
}

std::string model_test_name(const ::testing::TestParamInfo<const char*>& param_info) {
  std::string name(param_info.param);
  name = name.substr(0, name.find('.'));
  std::replace(name.begin(), name.end(), '-', '_');
  return name;
}

INSTANTIATE_TEST_SUITE_P(TinyModels, InterleaveModel,
                         ::testing::Values("tiny-qwen3moe-q4_k_m.gguf", "tiny-qwen3moe-q8_0.gguf"),
                         model_test_name);

}  // namespace
}  // namespace tandem
