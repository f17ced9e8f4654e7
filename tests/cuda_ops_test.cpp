// Every op of the CUDA accelerator against its CPU twin (cpu/matmul.h, cpu/ops.h,
// gpu/sim/sim_kernels.h) on random inputs, for every weight type and odd shapes (1, 7, 33, 257
// tokens; row counts that are not multiples of the kernels' tiles). Needs a CUDA device: skips
// with "no CUDA device" otherwise (always in builds without the CUDA backend).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "gpu/accelerator.h"
#include "gpu/cuda_accelerator.h"

#ifdef TANDEM_HAVE_CUDA
#include <algorithm>
#include <cmath>
#include <memory>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "cpu/quant_blocks.h"
#include "gpu/cuda/device_query.h"
#include "gpu/sim/sim_kernels.h"
#include "tests/test_support.h"
#include "tests/upload_check.h"
#endif

namespace tandem {
namespace {

#ifndef TANDEM_HAVE_CUDA

TEST(CudaOps, SkippedWithoutCudaBackend) {
  EXPECT_THROW(make_cuda_accelerator(0, 0), AcceleratorError);
  GTEST_SKIP()
      << "no CUDA device: this build has no CUDA backend (configure with -DTANDEM_CUDA=ON)";
}

#else

constexpr uint64_t kBudget = uint64_t{2} << 30;

const GgmlType kAllTypes[] = {GgmlType::F32,  GgmlType::F16,  GgmlType::BF16, GgmlType::Q4_0,
                              GgmlType::Q4_1, GgmlType::Q5_0, GgmlType::Q5_1, GgmlType::Q8_0,
                              GgmlType::Q4_K, GgmlType::Q5_K, GgmlType::Q6_K, GgmlType::MXFP4};

TEST(CudaFactory, ThrowsWithoutDeviceOrForAMissingIndex) {
  const int n = cuda_device_count();
  try {
    make_cuda_accelerator(n == 0 ? 0 : n, 0);
    FAIL() << "expected AcceleratorError";
  } catch (const AcceleratorError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find(n == 0 ? "no CUDA device" : "does not exist"), std::string::npos) << what;
  }
}

using test::random_floats;

// n_rows rows of `type` with row_stride bytes each (padding left zero).
std::vector<uint8_t> random_matrix(std::mt19937& rng, GgmlType type, int64_t n_rows, int64_t n_cols,
                                   int64_t row_stride) {
  std::vector<uint8_t> m(static_cast<size_t>(n_rows * row_stride), 0);
  const int64_t rb = row_bytes(type, n_cols);
  for (int64_t r = 0; r < n_rows; ++r) {
    uint8_t* row = m.data() + r * row_stride;
    if (can_quantize(type)) {
      const std::vector<float> x = random_floats(rng, n_cols);
      quantize_row(type, x.data(), row, n_cols);
    } else {  // MXFP4: random quants, exponents near 2^0
      std::uniform_int_distribution<int> byte(0, 255), exp(118, 130);
      for (int64_t i = 0; i < rb; ++i) row[i] = static_cast<uint8_t>(byte(rng));
      for (int64_t b = 0; b < rb; b += static_cast<int64_t>(sizeof(BlockMxfp4)))
        row[b] = static_cast<uint8_t>(exp(rng));
    }
  }
  return m;
}

class CudaOps : public ::testing::Test {
 protected:
  void SetUp() override {
    if (cuda_device_count() == 0) GTEST_SKIP() << "no CUDA device: the CUDA op tests need a GPU";
    acc_ = make_cuda_accelerator(0, kBudget);
  }
  void TearDown() override {
    if (!acc_) return;
    for (DeviceBuffer b : buffers_) acc_->release(b);
    EXPECT_EQ(acc_->live_bytes(), 0u);
  }
  template <class T>
  DeviceBuffer upload(const std::vector<T>& v) {
    DeviceBuffer b = acc_->allocate(v.size() * sizeof(T));
    buffers_.push_back(b);
    acc_->copy_to_device(Stream::Compute, b, 0, v.data(), v.size() * sizeof(T));
    return b;
  }
  DeviceBuffer zeros(uint64_t bytes) {
    DeviceBuffer b = acc_->allocate(bytes);
    buffers_.push_back(b);
    return b;
  }
  template <class T>
  std::vector<T> download(DeviceBuffer b, size_t n) {
    std::vector<T> v(n);
    acc_->copy_to_host(Stream::Compute, v.data(), b, 0, n * sizeof(T));
    acc_->synchronize(Stream::Compute);
    return v;
  }
  DeviceMatrix device_matrix(GgmlType type, const std::vector<uint8_t>& bytes, int64_t n_rows,
                             int64_t n_cols, int64_t stride) {
    return DeviceMatrix{type, upload(bytes), 0, n_rows, n_cols, stride};
  }

  std::unique_ptr<Accelerator> acc_;
  std::vector<DeviceBuffer> buffers_;
};

// Sum over the row of |w| * |x|: the scale a dot's rounding error is measured against.
std::vector<float> abs_dots(GgmlType type, const std::vector<uint8_t>& w, int64_t n_rows,
                            int64_t n_cols, int64_t stride, const float* x) {
  std::vector<float> row(static_cast<size_t>(n_cols)), out(static_cast<size_t>(n_rows));
  for (int64_t r = 0; r < n_rows; ++r) {
    dequantize_row(type, w.data() + r * stride, row.data(), n_cols);
    double s = 0;
    for (int64_t j = 0; j < n_cols; ++j) s += std::fabs(static_cast<double>(row[j]) * x[j]);
    out[r] = static_cast<float>(s);
  }
  return out;
}

TEST_F(CudaOps, MatmulEveryTypeAndTokenCount) {
  std::mt19937 rng(1);
  const int64_t n_rows = 37, n_cols = 512;  // rows: not a multiple of the 4 rows per block
  for (GgmlType type : kAllTypes) {
    for (bool padded : {false, true}) {
      const int64_t stride = row_bytes(type, n_cols) + (padded ? 4 : 0);
      const std::vector<uint8_t> w = random_matrix(rng, type, n_rows, n_cols, stride);
      const DeviceMatrix dw = device_matrix(type, w, n_rows, n_cols, stride);
      for (int64_t n_tokens : {1, 7, 33, 257}) {
        const std::vector<float> x = random_floats(rng, n_tokens * n_cols);
        std::vector<float> want(static_cast<size_t>(n_tokens * n_rows));
        matmul(MatrixRef{type, w.data(), n_rows, n_cols, stride}, x.data(), n_tokens, want.data(),
               nullptr);
        DeviceBuffer dy = zeros(want.size() * sizeof(float));
        acc_->matmul(dw, upload(x), n_tokens, dy);
        const std::vector<float> got = download<float>(dy, want.size());
        // GEMV (<= 8 tokens) repeats the CPU's integer block dots; the GEMM path multiplies the
        // same rounded values in f32, except q4_1/q5_1 whose CPU min term uses an f16 sum.
        const bool f16_sum = n_tokens > 8 && (type == GgmlType::Q4_1 || type == GgmlType::Q5_1);
        for (int64_t t = 0; t < n_tokens; ++t) {
          const std::vector<float> scale =
              abs_dots(type, w, n_rows, n_cols, stride, x.data() + t * n_cols);
          for (int64_t r = 0; r < n_rows; ++r) {
            const float tol = (f16_sum ? 2e-3f : 2e-5f) * scale[r] + 1e-6f;
            ASSERT_NEAR(got[t * n_rows + r], want[t * n_rows + r], tol)
                << type_name(type) << " tokens " << n_tokens << " padded " << padded << " t " << t
                << " r " << r;
          }
        }
      }
    }
  }
}

TEST_F(CudaOps, ExpertFfnMatchesSimTwin) {
  std::mt19937 rng(2);
  const int64_t n_embd = 256, n_ff = 512;
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::F16, GgmlType::MXFP4}) {
    const int64_t sg = row_bytes(type, n_embd), sd = row_bytes(type, n_ff);
    const auto g = random_matrix(rng, type, n_ff, n_embd, sg),
               u = random_matrix(rng, type, n_ff, n_embd, sg),
               d = random_matrix(rng, type, n_embd, n_ff, sd);
    const DeviceExpert e{device_matrix(type, g, n_ff, n_embd, sg),
                         device_matrix(type, u, n_ff, n_embd, sg),
                         device_matrix(type, d, n_embd, n_ff, sd)};
    for (int64_t n_tokens : {1, 7, 33}) {
      const std::vector<float> x = random_floats(rng, n_tokens * n_embd);
      std::vector<float> scratch(static_cast<size_t>(2 * n_tokens * n_ff)),
          want(static_cast<size_t>(n_tokens * n_embd));
      sim_expert_ffn(MatrixRef{type, g.data(), n_ff, n_embd, sg},
                     MatrixRef{type, u.data(), n_ff, n_embd, sg},
                     MatrixRef{type, d.data(), n_embd, n_ff, sd}, x.data(), n_tokens,
                     scratch.data(), want.data());
      DeviceBuffer out = zeros(want.size() * sizeof(float));
      acc_->expert_ffn(e, upload(x), n_tokens, zeros(scratch.size() * sizeof(float)), out);
      const std::vector<float> got = download<float>(out, want.size());
      float max_abs = 0;
      for (float v : want) max_abs = std::max(max_abs, std::fabs(v));
      for (size_t i = 0; i < want.size(); ++i) {
        // The hidden activations are re-quantized for down: a rare flip of one q8 level is allowed.
        ASSERT_NEAR(got[i], want[i], 1e-2f * max_abs)
            << type_name(type) << " tokens " << n_tokens << " i " << i;
      }
    }
  }
}

// One batched call (a stage's GEMVs for every expert in one launch; with more than 8 tokens
// for some expert, the per-expert path) equals the experts one at a time, and the CPU twin.
TEST_F(CudaOps, ExpertFfnBatchEqualsOneExpertAtATime) {
  std::mt19937 rng(9);
  const int64_t n_embd = 256, n_ff = 512;
  for (GgmlType type : {GgmlType::Q4_K, GgmlType::Q8_0, GgmlType::Q6_K, GgmlType::F16}) {
    for (const std::vector<int64_t>& rows :
         {std::vector<int64_t>{1, 3, 8, 2, 1}, std::vector<int64_t>{1, 9, 2}}) {
      const int64_t sg = row_bytes(type, n_embd), sd = row_bytes(type, n_ff);
      std::vector<DeviceExpert> experts;
      std::vector<std::vector<uint8_t> > host;
      for (size_t e = 0; e < rows.size(); ++e) {
        host.push_back(random_matrix(rng, type, n_ff, n_embd, sg));
        host.push_back(random_matrix(rng, type, n_ff, n_embd, sg));
        host.push_back(random_matrix(rng, type, n_embd, n_ff, sd));
        experts.push_back(DeviceExpert{device_matrix(type, host[3 * e], n_ff, n_embd, sg),
                                       device_matrix(type, host[3 * e + 1], n_ff, n_embd, sg),
                                       device_matrix(type, host[3 * e + 2], n_embd, n_ff, sd)});
      }
      int64_t total = 0;
      for (int64_t m : rows) total += m;
      const std::vector<float> x = random_floats(rng, total * n_embd);
      const DeviceBuffer scratch = zeros(2 * total * n_ff * sizeof(float));
      const DeviceBuffer out = zeros(total * n_embd * sizeof(float));
      acc_->expert_ffn_batch(experts.data(), rows.data(), experts.size(), upload(x), scratch, out);
      const std::vector<float> got = download<float>(out, total * n_embd);
      int64_t row0 = 0;
      for (size_t e = 0; e < rows.size(); ++e) {
        const int64_t m = rows[e];
        const std::vector<float> xe(x.begin() + row0 * n_embd, x.begin() + (row0 + m) * n_embd);
        const DeviceBuffer one = zeros(m * n_embd * sizeof(float));
        acc_->expert_ffn(experts[e], upload(xe), m, scratch, one);
        const std::vector<float> alone = download<float>(one, xe.size());
        std::vector<float> twin_scratch(2 * m * n_ff), twin(m * n_embd);
        sim_expert_ffn(MatrixRef{type, host[3 * e].data(), n_ff, n_embd, sg},
                       MatrixRef{type, host[3 * e + 1].data(), n_ff, n_embd, sg},
                       MatrixRef{type, host[3 * e + 2].data(), n_embd, n_ff, sd}, xe.data(), m,
                       twin_scratch.data(), twin.data());
        float max_abs = 0;
        for (float v : twin) max_abs = std::max(max_abs, std::fabs(v));
        for (int64_t i = 0; i < m * n_embd; ++i) {
          ASSERT_EQ(got[row0 * n_embd + i], alone[i])
              << type_name(type) << " expert " << e << " of " << rows.size() << " i " << i;
          ASSERT_NEAR(alone[i], twin[i], 1e-2f * max_abs) << type_name(type) << " expert " << e;
        }
        row0 += m;
      }
    }
  }
}

TEST_F(CudaOps, RmsNormMatchesCpu) {
  std::mt19937 rng(3);
  for (int64_t n_tokens : {1, 7, 33, 257}) {
    for (int64_t n : {7, 257, 2048}) {
      const std::vector<float> x = random_floats(rng, n_tokens * n, 4.0f),
                               w = random_floats(rng, n);
      for (bool with_w : {true, false}) {
        std::vector<float> want(x.size());
        for (int64_t t = 0; t < n_tokens; ++t)
          rms_norm(x.data() + t * n, with_w ? w.data() : nullptr, n, 1e-5f, want.data() + t * n);
        DeviceBuffer y = zeros(x.size() * sizeof(float));
        acc_->rms_norm(upload(x), with_w ? upload(w) : DeviceBuffer{}, n_tokens, n, 1e-5f, y);
        const std::vector<float> got = download<float>(y, x.size());
        for (size_t i = 0; i < x.size(); ++i)
          ASSERT_NEAR(got[i], want[i], 1e-6f * (1 + std::fabs(want[i]))) << i;
      }
    }
  }
}

TEST_F(CudaOps, RopeMatchesCpu) {
  std::mt19937 rng(4);
  std::uniform_int_distribution<int32_t> pos_dist(0, 5000);
  for (bool neox : {false, true}) {
    for (int64_t n_tokens : {1, 7, 33, 257}) {
      const int64_t n_heads = 3, head_dim = 64, n_rot = neox ? 64 : 32;
      std::vector<float> x = random_floats(rng, n_tokens * n_heads * head_dim);
      std::vector<int32_t> pos(static_cast<size_t>(n_tokens));
      for (int32_t& p : pos) p = pos_dist(rng);
      DeviceBuffer dx = upload(x);
      acc_->rope(dx, upload(pos), n_tokens, n_heads, head_dim, n_rot, 10000.0f, 1.0f, neox);
      const std::vector<float> got = download<float>(dx, x.size());
      for (int64_t t = 0; t < n_tokens; ++t)
        for (int64_t h = 0; h < n_heads; ++h)
          rope(x.data() + (t * n_heads + h) * head_dim, n_rot, pos[t], 10000.0f, 1.0f, neox);
      for (size_t i = 0; i < x.size(); ++i)
        ASSERT_NEAR(got[i], x[i], 1e-5f) << "neox " << neox << " i " << i;
    }
  }
}

TEST_F(CudaOps, RouterTopkMatchesSimTwin) {
  std::mt19937 rng(5);
  for (int64_t n_expert : {8, 60, 128}) {
    for (int64_t k : {1, 2, 8}) {
      for (bool renorm : {false, true}) {
        const int64_t n_tokens = 33;
        const std::vector<float> logits = random_floats(rng, n_tokens * n_expert, 5.0f);
        std::vector<int32_t> want_ids(static_cast<size_t>(n_tokens * k));
        std::vector<float> want_w(want_ids.size());
        sim_router_topk(logits.data(), n_tokens, n_expert, k, renorm, want_ids.data(),
                        want_w.data());
        DeviceBuffer ids = zeros(want_ids.size() * 4), weights = zeros(want_w.size() * 4);
        acc_->router_topk(upload(logits), n_tokens, n_expert, k, renorm, ids, weights);
        EXPECT_EQ(download<int32_t>(ids, want_ids.size()), want_ids)
            << n_expert << " experts, k " << k;
        const std::vector<float> got_w = download<float>(weights, want_w.size());
        for (size_t i = 0; i < want_w.size(); ++i) ASSERT_NEAR(got_w[i], want_w[i], 1e-6f) << i;
      }
    }
  }
}

TEST_F(CudaOps, ScatterAddWeightedMatchesSimTwinAndReportsBadIndex) {
  std::mt19937 rng(6);
  const int64_t n_out = 7, width = 257, n_rows = 33;
  const std::vector<float> y = random_floats(rng, n_rows * width), w = random_floats(rng, n_rows);
  std::vector<int32_t> index(static_cast<size_t>(n_rows));
  for (int32_t& i : index)
    i = std::uniform_int_distribution<int32_t>(0, n_out - 1)(rng);  // repeats
  std::vector<float> want = random_floats(rng, n_out * width);
  DeviceBuffer out = upload(want);
  sim_scatter_add_weighted(y.data(), index.data(), w.data(), n_rows, width, want.data(), n_out);
  acc_->scatter_add_weighted(upload(y), upload(index), upload(w), n_rows, width, out);
  EXPECT_EQ(download<float>(out, want.size()), want);  // same order of additions: exact
  index[3] = n_out;
  acc_->scatter_add_weighted(upload(y), upload(index), upload(w), n_rows, width, out);
  EXPECT_THROW(acc_->synchronize(Stream::Compute), AcceleratorError);
  acc_->synchronize(Stream::Compute);  // reported once
}

TEST_F(CudaOps, AttentionDecodeAndPrefillMatchSimTwin) {
  std::mt19937 rng(7);
  // (pos0, n_tokens): decode after a prefix, prefill from 0, a continued prefill.
  const std::pair<int64_t, int64_t> kShapes[] = {{40, 1}, {0, 7}, {5, 33}, {0, 257}};
  for (int64_t head_dim : {64, 128}) {
    for (const auto& [pos0, n_tokens] : kShapes) {
      const int64_t n_head = 4, n_head_kv = 2, n_ctx = 300, kv_dim = n_head_kv * head_dim;
      const std::vector<float> q = random_floats(rng, n_tokens * n_head * head_dim);
      const std::vector<float> k = random_floats(rng, n_tokens * kv_dim),
                               v = random_floats(rng, n_tokens * kv_dim);
      std::vector<float> kc = random_floats(rng, n_ctx * kv_dim),
                         vc = random_floats(rng, n_ctx * kv_dim);
      DeviceBuffer dkc = upload(kc), dvc = upload(vc), out = zeros(q.size() * sizeof(float));
      std::vector<float> want(q.size());
      sim_attention(q.data(), k.data(), v.data(), kc.data(), vc.data(), pos0, n_tokens, n_head,
                    n_head_kv, head_dim, want.data());
      acc_->attention(upload(q), upload(k), upload(v), dkc, dvc, pos0, n_tokens, n_head, n_head_kv,
                      head_dim, out);
      const std::vector<float> got = download<float>(out, q.size());
      for (size_t i = 0; i < want.size(); ++i)
        ASSERT_NEAR(got[i], want[i], 1e-5f) << "head_dim " << head_dim << " i " << i;
      EXPECT_EQ(download<float>(dkc, kc.size()), kc);
      EXPECT_EQ(download<float>(dvc, vc.size()), vc);
    }
  }
}

TEST_F(CudaOps, EmbeddingEveryTypeIsExactAndReportsBadId) {
  std::mt19937 rng(8);
  const int64_t n_rows = 50, n_cols = 512;
  for (GgmlType type : kAllTypes) {
    const int64_t stride = row_bytes(type, n_cols);
    const std::vector<uint8_t> table = random_matrix(rng, type, n_rows, n_cols, stride);
    const DeviceMatrix dt = device_matrix(type, table, n_rows, n_cols, stride);
    for (int64_t n_tokens : {1, 7, 33, 257}) {
      std::vector<int32_t> ids(static_cast<size_t>(n_tokens));
      for (int32_t& id : ids) id = std::uniform_int_distribution<int32_t>(0, n_rows - 1)(rng);
      std::vector<float> want(static_cast<size_t>(n_tokens * n_cols));
      sim_embedding(MatrixRef{type, table.data(), n_rows, n_cols, stride}, ids.data(), n_tokens,
                    want.data());
      DeviceBuffer y = zeros(want.size() * sizeof(float));
      acc_->embedding(dt, upload(ids), n_tokens, y);
      EXPECT_EQ(download<float>(y, want.size()), want) << type_name(type) << " tokens " << n_tokens;
    }
  }
  const std::vector<uint8_t> table =
      random_matrix(rng, GgmlType::Q8_0, n_rows, n_cols, row_bytes(GgmlType::Q8_0, n_cols));
  const DeviceMatrix dt =
      device_matrix(GgmlType::Q8_0, table, n_rows, n_cols, row_bytes(GgmlType::Q8_0, n_cols));
  acc_->embedding(dt, upload(std::vector<int32_t>{3, static_cast<int32_t>(n_rows)}), 2,
                  zeros(2 * n_cols * 4));
  EXPECT_THROW(acc_->synchronize(Stream::Compute), AcceleratorError);
}

TEST_F(CudaOps, BudgetCopiesAndEvents) {
  EXPECT_THROW(acc_->allocate(kBudget + 1), AcceleratorError);
  try {
    acc_->allocate(kBudget + 1);
  } catch (const AcceleratorError& e) {
    EXPECT_NE(std::string(e.what()).find(std::to_string(kBudget)), std::string::npos) << e.what();
  }
  // 10 MiB from pageable memory spans several staging slots; the copy stream's event orders
  // the compute stream's read after it.
  std::vector<uint8_t> src(10u << 20);
  for (size_t i = 0; i < src.size(); ++i) src[i] = static_cast<uint8_t>(i * 7 + 3);
  DeviceBuffer b = zeros(src.size());
  const Event copy_start = acc_->record(Stream::Copy);
  acc_->copy_to_device(Stream::Copy, b, 0, src.data(), src.size());
  const Event copy_done = acc_->record(Stream::Copy);
  acc_->wait(Stream::Compute, copy_done);
  std::vector<uint8_t> back(src.size());
  acc_->copy_to_host(Stream::Compute, back.data(), b, 0, back.size());
  acc_->synchronize(Stream::Compute);
  EXPECT_EQ(back, src);
  // The device clock between the copy's events: 10 MiB over PCIe takes some hundred us.
  const double copy_us = acc_->elapsed_us(copy_start, copy_done);
  EXPECT_GT(copy_us, 0.0);
  EXPECT_LT(copy_us, 1e6);
  std::printf("10 MiB pageable copy: %.1f us on the device clock\n", copy_us);
  // Registered host memory (when the driver allows it) takes the direct path.
  auto* cuda = dynamic_cast<CudaAccelerator*>(acc_.get());
  ASSERT_NE(cuda, nullptr);
  std::vector<uint8_t> reg(1u << 20, 42);
  const bool registered = cuda->register_host(reg.data(), reg.size());
  acc_->copy_to_device(Stream::Copy, b, 100, reg.data(), reg.size());
  acc_->synchronize(Stream::Copy);
  if (registered) cuda->unregister_host(reg.data());
  std::vector<uint8_t> part(reg.size());
  acc_->copy_to_host(Stream::Copy, part.data(), b, 100, part.size());
  acc_->synchronize(Stream::Copy);
  EXPECT_EQ(part, reg);
  EXPECT_GT(acc_->live_bytes(), 0u);
  EXPECT_THROW(acc_->copy_to_device(Stream::Copy, b, src.size() - 1, src.data(), 2),
               AcceleratorError);
}

// Interleaved host rows go through the staging ring in whole groups (the 8.9 MB Q8_0 matrix
// spans three 4 MiB slots) and arrive as the file's rows.
TEST_F(CudaOps, UploadMatrixRebuildsFileRows) {
  test::expect_upload_rebuilds_rows(*acc_, GgmlType::Q4_K, 48, 512, 31);
  test::expect_upload_rebuilds_rows(*acc_, GgmlType::Q8_0, 2048, 4096, 32);
}

#endif  // TANDEM_HAVE_CUDA

}  // namespace
}  // namespace tandem
