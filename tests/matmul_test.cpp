// matmul (fast kernels, threads) against matmul_ref, thread-count determinism, CpuArena.
#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <random>
#include <thread>
#include <vector>

#include "cpu/arena.h"
#include "cpu/cpu_features.h"
#include "cpu/kernels.h"
#include "cpu/matmul.h"
#include "cpu/memory_bandwidth.h"
#include "cpu/quant.h"

namespace tandem {
namespace {

struct Weights {
  std::vector<uint8_t> bytes;
  MatrixRef ref;
};

// n_rows random rows; `pad` extra bytes per row test a row stride larger than the row.
Weights random_weights(GgmlType type, int64_t n_rows, int64_t n_cols, int64_t pad, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 0.05f);
  const int64_t stride = row_bytes(type, n_cols) + pad;
  Weights w{std::vector<uint8_t>(static_cast<size_t>(stride * n_rows), 0xAB), {}};
  std::vector<float> row(static_cast<size_t>(n_cols));
  for (int64_t r = 0; r < n_rows; ++r) {
    for (float& v : row) v = dist(rng);
    if (type == GgmlType::MXFP4) {  // no quantizer: random bytes with sane exponents
      uint8_t* p = w.bytes.data() + r * stride;
      for (int64_t b = 0; b < row_bytes(type, n_cols); ++b) p[b] = static_cast<uint8_t>(rng());
      for (int64_t b = 0; b < n_cols / 32; ++b) p[b * 17] = static_cast<uint8_t>(118 + rng() % 8);
      continue;
    }
    quantize_row(type, row.data(), w.bytes.data() + r * stride, n_cols);
  }
  w.ref = {type, w.bytes.data(), n_rows, n_cols, stride};
  return w;
}

std::vector<float> random_acts(int64_t n, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(n));
  for (float& v : x) v = dist(rng);
  return x;
}

class MatmulAllTypes : public ::testing::TestWithParam<GgmlType> {};

TEST_P(MatmulAllTypes, MatchesReferenceAndIsDeterministic) {
  const GgmlType type = GetParam();
  const int64_t n_cols = traits(type).block_elems == 256 ? 768 : 224;
  const int64_t n_rows = 37;
  const Weights w = random_weights(type, n_rows, n_cols, 6, 3);
  // 6 tokens: the decode-sized tiles; 37: the many-token kernels (8-, 4- and 1-token tiles).
  for (const int64_t n_tokens : {6, 37}) {
    const auto x = random_acts(n_cols * n_tokens, 4);
    std::vector<float> want(static_cast<size_t>(n_rows * n_tokens));
    matmul_ref(w.ref, x.data(), n_tokens, want.data());

    std::vector<float> single(want.size()), two(want.size()), one_thread(want.size());
    matmul(w.ref, x.data(), n_tokens, single.data(), nullptr);
    CpuArena arena2(2), arena1(1);
    matmul(w.ref, x.data(), n_tokens, two.data(), &arena2);
    matmul(w.ref, x.data(), n_tokens, one_thread.data(), &arena1);
    float scale = 0;
    for (float v : want) scale = std::max(scale, std::fabs(v));
    for (size_t i = 0; i < want.size(); ++i) {
      EXPECT_NEAR(single[i], want[i], 1e-4f * scale) << matmul_kernel_name(type) << " " << i;
      // Bit-for-bit the same whatever the thread count.
      EXPECT_EQ(std::memcmp(&single[i], &two[i], 4), 0) << i;
      EXPECT_EQ(std::memcmp(&single[i], &one_thread[i], 4), 0) << i;
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, MatmulAllTypes,
                         ::testing::Values(GgmlType::F32, GgmlType::F16, GgmlType::BF16,
                                           GgmlType::Q4_0, GgmlType::Q4_1, GgmlType::Q5_0,
                                           GgmlType::Q5_1, GgmlType::Q8_0, GgmlType::MXFP4,
                                           GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K),
                         [](const auto& p) { return std::string(type_name(p.param)); });

// matmul_many against one matmul per job: a batch of experts (gate and up share their input,
// so their activation pack), a job with no tokens, and a job of another type, on 1 and 2 threads.
TEST_P(MatmulAllTypes, ManyEqualsOneByOne) {
  const GgmlType type = GetParam();
  const int64_t n_cols = traits(type).block_elems == 256 ? 512 : 160;
  std::vector<Weights> w;
  for (uint32_t i = 0; i < 7; ++i)
    w.push_back(random_weights(type, 19 + 16 * (i % 3), n_cols, 4, 20 + i));
  w.push_back(random_weights(GgmlType::Q8_0, 33, n_cols, 0, 40));
  const std::vector<int64_t> tokens = {1, 1, 3, 3, 0, 5, 2, 4};
  std::vector<std::vector<float>> x, want;
  std::vector<MatmulJob> jobs;
  for (size_t i = 0; i < w.size(); ++i) {
    // Jobs 0/1 and 2/3 read the same activations.
    if (i % 2 == 0 || i > 3)
      x.push_back(random_acts(n_cols * std::max<int64_t>(tokens[i], 1), 50 + i));
    want.emplace_back(static_cast<size_t>(w[i].ref.n_rows * std::max<int64_t>(tokens[i], 1)),
                      -7.0f);
    matmul(w[i].ref, x.back().data(), tokens[i], want.back().data(), nullptr);
  }
  for (int threads : {1, 2}) {
    CpuArena arena(threads);
    std::vector<std::vector<float>> got;
    for (const auto& v : want) got.emplace_back(v.size(), -7.0f);
    jobs.clear();
    size_t xi = 0;
    for (size_t i = 0; i < w.size(); ++i) {
      if (i % 2 == 0 || i > 3) xi = jobs.empty() ? 0 : xi + 1;
      jobs.push_back({w[i].ref, x[xi].data(), tokens[i], got[i].data()});
    }
    matmul_many(jobs, &arena);
    for (size_t i = 0; i < w.size(); ++i) {
      ASSERT_EQ(std::memcmp(got[i].data(), want[i].data(), want[i].size() * 4), 0)
          << type_name(type) << " job " << i << ", " << threads << " threads";
    }
  }
}

TEST(Matmul, ManyTokensSplitAcrossThreads) {
  const Weights w = random_weights(GgmlType::Q8_0, 70, 512, 0, 5);
  const auto x = random_acts(512 * 257, 6);
  std::vector<float> want(70 * 257), got(70 * 257);
  matmul_ref(w.ref, x.data(), 257, want.data());
  CpuArena arena(2);
  matmul(w.ref, x.data(), 257, got.data(), &arena);
  for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[i], want[i], 1e-4) << i;
}

TEST(Matmul, NestedInsideArenaTasks) {
  // Expert-parallel callers run matmul from arena tasks with the same arena; buffers of an outer
  // call must survive a nested call that a waiting thread picks up.
  CpuArena arena(2);
  std::vector<Weights> experts;
  for (uint32_t e = 0; e < 6; ++e) experts.push_back(random_weights(GgmlType::Q4_K, 40, 512, 0, e));
  const auto x = random_acts(512 * 9, 11);
  std::vector<std::vector<float>> got(6, std::vector<float>(40 * 9));
  arena.parallel_for(0, 6, 1, [&](int64_t lo, int64_t hi) {
    for (int64_t e = lo; e < hi; ++e) matmul(experts[e].ref, x.data(), 9, got[e].data(), &arena);
  });
  for (int e = 0; e < 6; ++e) {
    std::vector<float> want(40 * 9);
    matmul_ref(experts[e].ref, x.data(), 9, want.data());
    for (size_t i = 0; i < want.size(); ++i) ASSERT_NEAR(got[e][i], want[i], 1e-4) << e << " " << i;
  }
}

TEST(Matmul, RejectsBadShapes) {
  const Weights w = random_weights(GgmlType::Q8_0, 2, 64, 0, 1);
  std::vector<float> x(64), y(2);
  MatrixRef bad = w.ref;
  bad.n_cols = 48;
  EXPECT_THROW(matmul(bad, x.data(), 1, y.data(), nullptr), std::invalid_argument);
  bad = w.ref;
  bad.row_stride = 10;
  EXPECT_THROW(matmul(bad, x.data(), 1, y.data(), nullptr), std::invalid_argument);
}

TEST(CpuArena, ParallelForCoversRangeOnce) {
  CpuArena arena(2);
  EXPECT_EQ(arena.n_threads(), 2);
  std::vector<std::atomic<int>> hits(1000);
  arena.parallel_for(3, 1000, 7, [&](int64_t lo, int64_t hi) {
    EXPECT_LE(hi - lo, 7);
    for (int64_t i = lo; i < hi; ++i) hits[i].fetch_add(1);
  });
  for (int64_t i = 0; i < 1000; ++i) EXPECT_EQ(hits[i].load(), i < 3 ? 0 : 1) << i;
  arena.parallel_for(5, 5, 1, [&](int64_t, int64_t) { ADD_FAILURE() << "empty range ran"; });
}

TEST(CpuArena, ParallelChunksRunEveryChunkOnce) {
  // Uneven shares, an empty one, and a slow first chunk so the other workers steal from its end.
  const std::vector<int64_t> share_first = {0, 30, 30, 37, 90};
  for (int threads : {1, 2, 4}) {
    CpuArena arena(threads);
    std::vector<std::atomic<int>> hits(90);
    arena.parallel_chunks(share_first, [&](int64_t c) {
      if (c == 0) std::this_thread::sleep_for(std::chrono::milliseconds(20));
      hits[c].fetch_add(1);
    });
    for (int64_t c = 0; c < 90; ++c) EXPECT_EQ(hits[c].load(), 1) << c << ", " << threads;
  }
  CpuArena arena(2);
  const std::vector<int64_t> none = {0, 0, 0};
  arena.parallel_chunks(none, [&](int64_t) { ADD_FAILURE() << "a chunk of an empty plan ran"; });
}

TEST(Matmul, ManyJobsOfOddSizesEqualOneThread) {
  // Decode-sized products of many matrices (an MoE layer's experts): rows not multiples of the
  // 16-row block, jobs without tokens, shares that end inside a job, small chunks at each share's
  // end. Every row must come out exactly once and as one thread computes it.
  std::vector<Weights> w;
  const std::vector<int64_t> rows = {768, 19, 0, 130, 16, 257, 1, 48, 768, 33};
  for (size_t i = 0; i < rows.size(); ++i)
    w.push_back(random_weights(GgmlType::Q4_K, std::max<int64_t>(rows[i], 1), 256, 0, 70 + i));
  const auto x = random_acts(256, 71);
  std::vector<std::vector<float>> want(rows.size()), got(rows.size());
  std::vector<MatmulJob> one, two;
  for (size_t i = 0; i < rows.size(); ++i) {
    want[i].assign(static_cast<size_t>(w[i].ref.n_rows), NAN);
    got[i].assign(static_cast<size_t>(w[i].ref.n_rows), NAN);
    const int64_t tokens = rows[i] == 0 ? 0 : 1;
    one.push_back({w[i].ref, x.data(), tokens, want[i].data()});
    two.push_back({w[i].ref, x.data(), tokens, got[i].data()});
  }
  matmul_many(one, nullptr);
  CpuArena arena(2);
  matmul_many(two, &arena);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t r = 0; r < rows[i]; ++r) {
      ASSERT_FALSE(std::isnan(got[i][r])) << "job " << i << " row " << r << " not computed";
      ASSERT_EQ(got[i][r], want[i][r]) << "job " << i << " row " << r;
    }
  }
}

TEST(CpuArena, DefaultUsesPhysicalCores) {
  CpuArena arena;
  EXPECT_EQ(arena.n_threads(), physical_core_count());
  EXPECT_GE(arena.n_threads(), 1);
  EXPECT_THROW(CpuArena(-1), std::invalid_argument);
}

// Throughput report, not a test (no assertions): run with
//   matmul_test --gtest_also_run_disabled_tests --gtest_filter='*Bench*'
// Decode: one token through 64 experts' worth of 768 x 2048 rows (all experts as one matrix),
// GB/s of weights streamed vs this machine's measured read bandwidth. Prefill: 512 tokens
// through one expert.
double best_seconds(int reps, const std::function<void()>& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best,
                    std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best;
}

TEST(MatmulBench, DISABLED_DecodeAndPrefill) {
  const int64_t n_cols = 2048, n_rows = 768 * 64;
  for (int n_threads : {1, 2}) {
    CpuArena arena(n_threads);
    const double bw = measure_read_bandwidth(&arena, uint64_t{1} << 29, 3);
    std::printf("threads %d: read bandwidth %.1f GB/s\n", n_threads, bw);
    for (GgmlType type : {GgmlType::Q8_0, GgmlType::Q4_K}) {
      const Weights w = random_weights(type, n_rows, n_cols, 0, 7);
      const auto x = random_acts(n_cols * 512, 8);
      std::vector<float> y(static_cast<size_t>(n_rows));
      const double s = best_seconds(5, [&] { matmul(w.ref, x.data(), 1, y.data(), &arena); });
      const double gbs = static_cast<double>(w.bytes.size()) / s / 1e9;
      MatrixRef expert = w.ref;
      expert.n_rows = 768;
      std::vector<float> y512(static_cast<size_t>(768 * 512));
      const double sp =
          best_seconds(3, [&] { matmul(expert, x.data(), 512, y512.data(), &arena); });
      const double gflops = 2.0 * 768 * n_cols * 512 / sp / 1e9;
      std::printf(
          "  %-18s decode %7.2f ms  %5.1f GB/s (%3.0f%% of read bw) | prefill 512 tok x "
          "768x2048: %6.2f ms, %6.1f GFLOP/s\n",
          std::string(matmul_kernel_name(type)).c_str(), s * 1e3, gbs, 100 * gbs / bw, sp * 1e3,
          gflops);
      // A decode step's experts: 16 products of 768 rows (8 experts' gate and up) in one batch.
      std::vector<MatmulJob> jobs;
      std::vector<std::vector<float>> outs(64, std::vector<float>(768));
      for (int j = 0; j < 64; ++j) {
        MatrixRef m = w.ref;
        m.n_rows = 768;
        m.data = static_cast<const uint8_t*>(w.ref.data) + j * 768 * w.ref.row_stride;
        jobs.push_back({m, x.data(), 1, outs[j].data()});
      }
      const double sm = best_seconds(5, [&] {
        for (int b = 0; b < 4; ++b) matmul_many(std::span(jobs).subspan(16 * b, 16), &arena);
      });
      std::printf("  %-18s 4 batches of 16 experts' products: %7.2f ms  %5.1f GB/s\n", "",
                  sm * 1e3, static_cast<double>(w.bytes.size()) / sm / 1e9);
      // The kernel's own rate, one thread: 192 rows (under 0.5 MB) that stay in L2 against one
      // packed token, so neither DRAM nor activation packing nor threading bounds it.
      const FastKernel* k = find_fast_kernel(type, cpu_features());
      std::vector<uint8_t> pack(static_cast<size_t>(act_pack_bytes(k->layout, n_cols, 1)) + 64);
      uint8_t* aligned = pack.data() + (64 - reinterpret_cast<uintptr_t>(pack.data()) % 64) % 64;
      ActPack act;
      pack_activations(k->layout, x.data(), n_cols, 1, 0, 1, aligned, &act);
      const double sh = best_seconds(5, [&] {
        for (int rep = 0; rep < 1000; ++rep) k->run(w.ref, act, 0, 192, 0, 1, y.data(), 192);
      });
      std::printf("  %-18s cache-resident decode kernel, 1 thread: %5.1f GB/s\n", "",
                  1000.0 * static_cast<double>(192 * w.ref.row_stride) / sh / 1e9);
    }
  }
}

}  // namespace
}  // namespace tandem
