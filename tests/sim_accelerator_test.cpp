// The sim accelerator: memory budget, every device op against the engine's CPU path (bit for
// bit), stream/event ordering, copy/compute overlap in virtual time, trace output.
#include "gpu/sim_accelerator.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "engine/attention.h"
#include "engine/moe.h"
#include "engine/trace.h"
#include "gpu/sim/sim_accelerator.h"
#include "gpu/sim/sim_cost.h"
#include "gpu/sim/sim_kernels.h"
#include "tests/upload_check.h"

namespace tandem {
namespace {

HardwareProfile test_profile() {
  HardwareProfile p;
  p.name = "test-gpu";
  p.vram_bytes = 1ull << 30;
  p.hbm_gbps = 1000.0;
  p.fp32_tflops = 80.0;
  p.fp16_tflops = 160.0;
  p.bf16_tflops = 160.0;
  p.int8_tops = 320.0;
  p.pcie_gbps = 25.0;
  p.pcie_latency_us = 10.0;
  p.launch_overhead_us = 5.0;
  return p;
}

std::vector<float> random_floats(size_t n, uint32_t seed, float scale = 1.0f) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  std::vector<float> v(n);
  for (float& x : v) x = dist(rng);
  return v;
}

// A host weight matrix in a GGUF type, rows packed at row_bytes.
struct HostMatrix {
  GgmlType type;
  int64_t n_rows, n_cols, stride;
  std::vector<uint8_t> bytes;
  MatrixRef ref() const { return MatrixRef{type, bytes.data(), n_rows, n_cols, stride}; }
};

HostMatrix random_matrix(GgmlType type, int64_t n_rows, int64_t n_cols, uint32_t seed) {
  HostMatrix m{type, n_rows, n_cols, row_bytes(type, n_cols), {}};
  m.bytes.resize(static_cast<size_t>(n_rows * m.stride));
  const std::vector<float> values = random_floats(static_cast<size_t>(n_rows * n_cols), seed, 0.1f);
  for (int64_t r = 0; r < n_rows; ++r) {
    quantize_row(type, values.data() + r * n_cols, m.bytes.data() + r * m.stride, n_cols);
  }
  return m;
}

void expect_bitwise_equal(const std::vector<float>& got, const std::vector<float>& want,
                          const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(std::memcmp(&got[i], &want[i], sizeof(float)), 0)
        << what << ": element " << i << " is " << got[i] << ", CPU gives " << want[i];
  }
}

class SimTest : public ::testing::Test {
 protected:
  void TearDown() override {
    for (DeviceBuffer b : owned_) acc_->release(b);
    EXPECT_EQ(acc_->live_bytes(), 0u) << "device memory leaked";
  }

  SimAccelerator& sim() { return static_cast<SimAccelerator&>(*acc_); }

  DeviceBuffer alloc(uint64_t bytes) {
    owned_.push_back(acc_->allocate(bytes));
    return owned_.back();
  }
  DeviceBuffer upload(const void* data, uint64_t bytes, uint64_t pad_front = 0) {
    DeviceBuffer b = alloc(bytes + pad_front);
    acc_->copy_to_device(Stream::Compute, b, pad_front, data, bytes);
    acc_->synchronize(Stream::Compute);
    return b;
  }
  template <class T>
  DeviceBuffer upload(const std::vector<T>& v) {
    return upload(v.data(), v.size() * sizeof(T));
  }
  DeviceMatrix upload(const HostMatrix& m, uint64_t pad_front = 0) {
    return DeviceMatrix{m.type,    upload(m.bytes.data(), m.bytes.size(), pad_front),
                        pad_front, m.n_rows,
                        m.n_cols,  m.stride};
  }
  template <class T = float>
  std::vector<T> download(DeviceBuffer b, size_t n) {
    std::vector<T> v(n);
    acc_->copy_to_host(Stream::Compute, v.data(), b, 0, n * sizeof(T));
    acc_->synchronize(Stream::Compute);
    return v;
  }

  TraceRecorder trace_;
  std::unique_ptr<Accelerator> acc_ = make_sim_accelerator(test_profile(), 256ull << 20, &trace_);
  std::vector<DeviceBuffer> owned_;
};

TEST(SimMemory, BudgetIsEnforcedAndReleasesReturnToZero) {
  auto acc = make_sim_accelerator(test_profile(), 1000000, nullptr);
  EXPECT_EQ(acc->memory_budget(), 1000000u);
  DeviceBuffer a = acc->allocate(600000);
  DeviceBuffer b = acc->allocate(300000);
  EXPECT_EQ(acc->live_bytes(), 900000u);
  try {
    acc->allocate(200000);
    FAIL() << "allocation beyond the budget succeeded";
  } catch (const AcceleratorError& e) {
    const std::string msg = e.what();
    for (const char* part : {"200000", "900000", "1000000"}) {
      EXPECT_NE(msg.find(part), std::string::npos) << "message lacks " << part << ": " << msg;
    }
  }
  EXPECT_EQ(acc->live_bytes(), 900000u);
  acc->release(a);
  EXPECT_EQ(acc->live_bytes(), 300000u);
  DeviceBuffer c = acc->allocate(200000);  // fits now
  acc->release(b);
  acc->release(c);
  EXPECT_EQ(acc->live_bytes(), 0u);
  EXPECT_THROW(acc->release(c), AcceleratorError);
  EXPECT_FALSE(acc->allocate(0));  // an empty buffer, nothing allocated
  EXPECT_EQ(acc->live_bytes(), 0u);
}

TEST(SimMemory, BudgetZeroMeansProfileVram) {
  auto acc = make_sim_accelerator(test_profile(), 0, nullptr);
  EXPECT_EQ(acc->memory_budget(), test_profile().vram_bytes);
  EXPECT_EQ(acc->name(), "sim (test-gpu)");
}

TEST_F(SimTest, OutOfRangeArgumentsThrowAtTheCall) {
  DeviceBuffer small = alloc(16);
  std::vector<float> host(8);
  EXPECT_THROW(acc_->copy_to_device(Stream::Copy, small, 8, host.data(), 16), AcceleratorError);
  EXPECT_THROW(acc_->rms_norm(small, DeviceBuffer{}, 2, 4, 1e-6f, small), AcceleratorError);
  EXPECT_THROW(acc_->copy_to_host(Stream::Copy, host.data(), DeviceBuffer{99999, 4}, 0, 4),
               AcceleratorError);
}

class SimMatmul : public SimTest,
                  public ::testing::WithParamInterface<std::tuple<GgmlType, int>> {};

TEST_P(SimMatmul, EqualsCpuMatmul) {
  const auto [type, n_tokens] = GetParam();
  const int64_t n_rows = 37, n_cols = 512;  // odd row count; 512 fits every block size
  const HostMatrix w = random_matrix(type, n_rows, n_cols, 7);
  const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens * n_cols), 11);
  std::vector<float> want(static_cast<size_t>(n_tokens * n_rows));
  matmul(w.ref(), x.data(), n_tokens, want.data(), nullptr);

  const DeviceMatrix dw = upload(w, 512);  // weights at a non-zero offset
  const DeviceBuffer dx = upload(x);
  const DeviceBuffer dy = alloc(want.size() * sizeof(float));
  acc_->matmul(dw, dx, n_tokens, dy);
  expect_bitwise_equal(download(dy, want.size()), want, std::string(type_name(type)));
}

INSTANTIATE_TEST_SUITE_P(Types, SimMatmul,
                         ::testing::Combine(::testing::Values(GgmlType::F32, GgmlType::F16,
                                                              GgmlType::Q8_0, GgmlType::Q4_K),
                                            ::testing::Values(1, 9)));

// The engine's expert path (run_expert with routing weight 1) is the reference.
TEST_F(SimTest, ExpertFfnEqualsEngineRunExpert) {
  const int32_t n_embd = 256, n_ff = 512, n_tokens = 5;
  const HostMatrix gate = random_matrix(GgmlType::Q4_K, n_ff, n_embd, 1);
  const HostMatrix up = random_matrix(GgmlType::Q8_0, n_ff, n_embd, 2);
  const HostMatrix down = random_matrix(GgmlType::Q4_K, n_embd, n_ff, 3);
  const std::vector<float> x = random_floats(static_cast<size_t>(n_tokens) * n_embd, 4);

  ModelSpec spec;
  spec.n_embd = n_embd;
  spec.n_ff_expert = n_ff;
  LayerWeights w;
  auto view = [](const HostMatrix& m) {
    TensorView t;
    t.type = m.type;
    t.ne[0] = m.n_cols;
    t.ne[1] = m.n_rows;
    t.data = m.bytes.data();
    return t;
  };
  w.gate_exps = view(gate);
  w.up_exps = view(up);
  w.down_exps = view(down);
  Routing routing{n_tokens, 1, std::vector<int32_t>(n_tokens, 0),
                  std::vector<float>(n_tokens, 1.0f)};
  ExpertTokens group{0, {0, 1, 2, 3, 4}, {0, 0, 0, 0, 0}};
  MoeScratch scratch;
  scratch.slot_out.resize(static_cast<size_t>(n_tokens) * n_embd);
  run_expert(spec, w, group, routing, x.data(), scratch, nullptr);

  const DeviceExpert e{upload(gate), upload(up), upload(down, 256)};
  const DeviceBuffer dx = upload(x);
  const DeviceBuffer scratch_buf = alloc(2ull * n_tokens * n_ff * sizeof(float));
  const DeviceBuffer out = alloc(static_cast<uint64_t>(n_tokens) * n_embd * sizeof(float));
  acc_->expert_ffn(e, dx, n_tokens, scratch_buf, out);
  expect_bitwise_equal(download(out, scratch.slot_out.size()), scratch.slot_out, "expert_ffn");
}

// A batch of experts equals each expert on its own rows; experts of other shapes are refused.
TEST_F(SimTest, ExpertFfnBatchEqualsOneExpertAtATime) {
  const int32_t n_embd = 256, n_ff = 512;
  const std::vector<int64_t> rows = {1, 3, 8, 2};
  int64_t total = 0;
  for (int64_t m : rows) total += m;
  std::vector<DeviceExpert> experts;
  for (uint32_t e = 0; e < rows.size(); ++e) {
    experts.push_back(DeviceExpert{upload(random_matrix(GgmlType::Q4_K, n_ff, n_embd, 10 + e)),
                                   upload(random_matrix(GgmlType::Q4_K, n_ff, n_embd, 20 + e)),
                                   upload(random_matrix(GgmlType::Q4_K, n_embd, n_ff, 30 + e))});
  }
  const std::vector<float> x = random_floats(static_cast<size_t>(total) * n_embd, 7);
  const DeviceBuffer dx = upload(x), scratch = alloc(2ull * total * n_ff * sizeof(float));
  const DeviceBuffer out = alloc(static_cast<uint64_t>(total) * n_embd * sizeof(float));
  acc_->expert_ffn_batch(experts.data(), rows.data(), experts.size(), dx, scratch, out);
  const std::vector<float> got = download(out, static_cast<size_t>(total) * n_embd);
  int64_t row0 = 0;
  for (size_t e = 0; e < rows.size(); ++e) {
    const std::vector<float> xe(x.begin() + row0 * n_embd, x.begin() + (row0 + rows[e]) * n_embd);
    const DeviceBuffer one = alloc(static_cast<uint64_t>(rows[e]) * n_embd * sizeof(float));
    acc_->expert_ffn(experts[e], upload(xe), rows[e], scratch, one);
    const std::vector<float> ge(got.begin() + row0 * n_embd,
                                got.begin() + (row0 + rows[e]) * n_embd);
    expect_bitwise_equal(ge, download(one, xe.size()), "expert " + std::to_string(e));
    row0 += rows[e];
  }
  std::vector<DeviceExpert> mixed = experts;
  mixed[1].gate = upload(random_matrix(GgmlType::Q4_K, n_ff / 2, n_embd, 40));
  try {
    acc_->expert_ffn_batch(mixed.data(), rows.data(), mixed.size(), dx, scratch, out);
    FAIL() << "experts of other shapes were accepted";
  } catch (const AcceleratorError& err) {
    EXPECT_NE(std::string(err.what()).find("expert_ffn_batch"), std::string::npos) << err.what();
  }
}

TEST_F(SimTest, RmsNormEqualsCpu) {
  const int64_t n_tokens = 3, n = 96;
  const std::vector<float> x = random_floats(n_tokens * n, 5), w = random_floats(n, 6);
  std::vector<float> want(x.size()), want_plain(x.size());
  for (int64_t t = 0; t < n_tokens; ++t) {
    rms_norm(x.data() + t * n, w.data(), n, 1e-5f, want.data() + t * n);
    rms_norm(x.data() + t * n, nullptr, n, 1e-5f, want_plain.data() + t * n);
  }
  const DeviceBuffer dx = upload(x), dw = upload(w), dy = alloc(x.size() * sizeof(float));
  acc_->rms_norm(dx, dw, n_tokens, n, 1e-5f, dy);
  expect_bitwise_equal(download(dy, x.size()), want, "rms_norm");
  acc_->rms_norm(dx, DeviceBuffer{}, n_tokens, n, 1e-5f, dy);
  expect_bitwise_equal(download(dy, x.size()), want_plain, "rms_norm without weight");
}

TEST_F(SimTest, RopeEqualsCpu) {
  const int64_t n_tokens = 4, n_heads = 3, head_dim = 32, n_rot = 24;
  const std::vector<int32_t> pos = {0, 5, 17, 1000};
  for (bool neox : {false, true}) {
    std::vector<float> want = random_floats(n_tokens * n_heads * head_dim, 8);
    const DeviceBuffer dx = upload(want), dpos = upload(pos);
    for (int64_t t = 0; t < n_tokens; ++t) {
      for (int64_t h = 0; h < n_heads; ++h) {
        rope(want.data() + (t * n_heads + h) * head_dim, n_rot, pos[t], 10000.0f, 0.5f, neox);
      }
    }
    acc_->rope(dx, dpos, n_tokens, n_heads, head_dim, n_rot, 10000.0f, 0.5f, neox);
    expect_bitwise_equal(download(dx, want.size()), want, neox ? "rope neox" : "rope normal");
  }
}

// Router logits by device matmul, then router_topk, against the engine's compute_routing.
TEST_F(SimTest, RouterTopkEqualsEngineRouting) {
  const int32_t n_embd = 64, n_expert = 16, k = 4, n_tokens = 6;
  for (bool renormalize : {false, true}) {
    const HostMatrix router = random_matrix(GgmlType::F32, n_expert, n_embd, 9);
    std::vector<float> xn = random_floats(static_cast<size_t>(n_tokens) * n_embd, 10);
    std::fill_n(xn.begin() + 5 * n_embd, n_embd, 0.0f);  // token 5: all logits tie
    ModelSpec spec;
    spec.n_expert = n_expert;
    spec.n_expert_used = k;
    spec.norm_topk = renormalize;
    LayerWeights w;
    w.router.type = GgmlType::F32;
    w.router.ne[0] = n_embd;
    w.router.ne[1] = n_expert;
    w.router.data = router.bytes.data();
    MoeScratch scratch;
    Routing want;
    compute_routing(spec, w, xn.data(), n_tokens, scratch, nullptr, want);

    const DeviceMatrix dr = upload(router);
    const DeviceBuffer dx = upload(xn), logits = alloc(n_tokens * n_expert * sizeof(float));
    const DeviceBuffer ids = alloc(n_tokens * k * sizeof(int32_t)),
                       weights = alloc(n_tokens * k * sizeof(float));
    acc_->matmul(dr, dx, n_tokens, logits);
    acc_->router_topk(logits, n_tokens, n_expert, k, renormalize, ids, weights);
    EXPECT_EQ(download<int32_t>(ids, want.expert.size()), want.expert);
    expect_bitwise_equal(download(weights, want.weight.size()), want.weight, "router weights");
    EXPECT_EQ(want.expert[5 * k], 0);  // ties resolved to the lowest ids
  }
}

// Weighted expert outputs scattered in (token, slot) order equal the engine's combine_slots.
TEST_F(SimTest, ScatterAddWeightedEqualsEngineCombine) {
  const int32_t n_tokens = 5, k = 3, width = 40;
  Routing routing{n_tokens, k, std::vector<int32_t>(n_tokens * k, 0),
                  random_floats(n_tokens * k, 12)};
  const std::vector<float> y = random_floats(static_cast<size_t>(n_tokens) * k * width, 13);
  MoeScratch scratch;
  scratch.slot_out.resize(y.size());
  for (size_t i = 0; i < y.size(); ++i) scratch.slot_out[i] = y[i] * routing.weight[i / width];
  std::vector<float> want(static_cast<size_t>(n_tokens) * width);
  combine_slots(routing, width, scratch, want.data());

  std::vector<int32_t> index(n_tokens * k);
  for (int32_t i = 0; i < n_tokens * k; ++i) index[i] = i / k;
  const DeviceBuffer dy = upload(y), di = upload(index), dw = upload(routing.weight);
  const DeviceBuffer out = upload(std::vector<float>(want.size(), 0.0f));
  acc_->scatter_add_weighted(dy, di, dw, n_tokens * k, width, out);
  expect_bitwise_equal(download(out, want.size()), want, "scatter_add_weighted");

  // An index outside `out` is reported by synchronize, naming the op.
  const DeviceBuffer bad = upload(std::vector<int32_t>(n_tokens * k, n_tokens));
  acc_->scatter_add_weighted(dy, bad, dw, n_tokens * k, width, out);
  try {
    acc_->synchronize(Stream::Compute);
    FAIL() << "bad index not reported";
  } catch (const AcceleratorError& e) {
    EXPECT_NE(std::string(e.what()).find("scatter_add"), std::string::npos) << e.what();
  }
}

// Prefill then decode with GQA against the engine's attend() over its own KV cache.
TEST_F(SimTest, AttentionEqualsEngineAttend) {
  ModelSpec spec;
  spec.n_head = 4;
  spec.n_head_kv = 2;
  spec.head_dim = 16;
  const int32_t n_ctx = 12, q_dim = spec.q_dim(), kv_dim = spec.kv_dim();
  KvCache cache(1, 1, n_ctx, spec.n_head_kv, spec.head_dim, KvType::F32);
  const DeviceBuffer k_cache = alloc(n_ctx * kv_dim * sizeof(float)),
                     v_cache = alloc(n_ctx * kv_dim * sizeof(float));
  int32_t pos0 = 0;
  for (int32_t n_tokens : {5, 1, 3}) {
    std::vector<BatchEntry> batch;
    for (int32_t t = 0; t < n_tokens; ++t) batch.push_back(BatchEntry{0, pos0 + t, 0, true});
    const auto q = random_floats(n_tokens * q_dim, 20 + pos0),
               k = random_floats(n_tokens * kv_dim, 30 + pos0),
               v = random_floats(n_tokens * kv_dim, 40 + pos0);
    cache.store(0, batch, k.data(), v.data());
    std::vector<float> want(q.size());
    attend(spec, cache, 0, batch, q.data(), want.data(), nullptr);

    const DeviceBuffer dq = upload(q), dk = upload(k), dv = upload(v),
                       out = alloc(q.size() * sizeof(float));
    acc_->attention(dq, dk, dv, k_cache, v_cache, pos0, n_tokens, spec.n_head, spec.n_head_kv,
                    spec.head_dim, out);
    expect_bitwise_equal(download(out, want.size()), want,
                         "attention at pos0 " + std::to_string(pos0));
    pos0 += n_tokens;
  }
  EXPECT_THROW(acc_->attention(k_cache, k_cache, k_cache, k_cache, v_cache, 10, 3, spec.n_head,
                               spec.n_head_kv, spec.head_dim, k_cache),
               AcceleratorError);  // past the cache's 12 positions
}

TEST_F(SimTest, EmbeddingEqualsDequantizedRows) {
  const HostMatrix table = random_matrix(GgmlType::Q8_0, 50, 64, 14);
  const std::vector<int32_t> ids = {3, 0, 49, 3};
  std::vector<float> want(ids.size() * 64);
  for (size_t t = 0; t < ids.size(); ++t) {
    dequantize_row(table.type, table.bytes.data() + ids[t] * table.stride, want.data() + t * 64,
                   64);
  }
  const DeviceMatrix dt = upload(table);
  const DeviceBuffer di = upload(ids), y = alloc(want.size() * sizeof(float));
  acc_->embedding(dt, di, static_cast<int64_t>(ids.size()), y);
  expect_bitwise_equal(download(y, want.size()), want, "embedding");

  const DeviceBuffer bad = upload(std::vector<int32_t>{50});
  acc_->embedding(dt, bad, 1, y);
  EXPECT_THROW(acc_->synchronize(Stream::Compute), AcceleratorError);
}

// A compute op that waits on the copy stream's event sees the copied weights, even though the
// copy stream is busy with a large transfer queued before them.
TEST_F(SimTest, ComputeWaitingOnCopyEventSeesCopiedData) {
  const HostMatrix w = random_matrix(GgmlType::Q8_0, 64, 256, 15);
  const std::vector<float> x = random_floats(2 * 256, 16);
  std::vector<float> want(2 * 64);
  matmul(w.ref(), x.data(), 2, want.data(), nullptr);

  const std::vector<uint8_t> big(48u << 20, 1);
  const DeviceBuffer dbig = alloc(big.size());
  const DeviceBuffer dw = alloc(w.bytes.size());
  const DeviceBuffer dx = upload(x), dy = alloc(want.size() * sizeof(float));
  const Event start = acc_->record(Stream::Copy);
  acc_->copy_to_device(Stream::Copy, dbig, 0, big.data(), big.size());
  const Event big_copied = acc_->record(Stream::Copy);
  acc_->copy_to_device(Stream::Copy, dw, 0, w.bytes.data(), w.bytes.size());
  const Event copied = acc_->record(Stream::Copy);
  acc_->wait(Stream::Compute, copied);
  acc_->matmul(DeviceMatrix{w.type, dw, 0, w.n_rows, w.n_cols, w.stride}, dx, 2, dy);
  expect_bitwise_equal(download(dy, want.size()), want, "matmul after copy event");
  acc_->synchronize(Stream::Copy);
  // In virtual time the matmul ran after both copies.
  EXPECT_GE(sim().clock_us(Stream::Compute), sim().clock_us(Stream::Copy));
  acc_->wait(Stream::Compute, Event{});  // the empty event is already complete
  // Elapsed device time between events is the modelled time of what ran between them.
  const SimCostModel cost(sim().profile());
  EXPECT_NEAR(acc_->elapsed_us(start, big_copied), cost.copy_us(big.size()), 1e-6);
  EXPECT_NEAR(acc_->elapsed_us(big_copied, copied), cost.copy_us(w.bytes.size()), 1e-6);
  EXPECT_LT(acc_->elapsed_us(Event{}, copied), 0.0) << "no such event";
  EXPECT_LT(acc_->elapsed_us(copied, Event{copied.handle + 100}), 0.0);
}

// A long run records events without end; completed ones are dropped once thousands pile up.
// A dropped handle still works in wait (a no-op: it completed) and reads -1 in elapsed_us.
TEST_F(SimTest, OldEventsAreRetiredAndTheirHandlesStayUsable) {
  const DeviceBuffer b = alloc(4096);
  const std::vector<uint8_t> src(4096, 7);
  const Event first = acc_->record(Stream::Copy);
  acc_->copy_to_device(Stream::Copy, b, 0, src.data(), src.size());
  const Event first_done = acc_->record(Stream::Copy);
  acc_->synchronize(Stream::Copy);
  EXPECT_GT(acc_->elapsed_us(first, first_done), 0.0);
  acc_->wait(Stream::Compute, first_done);
  acc_->synchronize(Stream::Compute);
  for (int i = 0; i < 10000; ++i) {
    acc_->record(i % 2 ? Stream::Copy : Stream::Compute);
    if (i % 1000 == 999) {
      acc_->synchronize(Stream::Copy);
      acc_->synchronize(Stream::Compute);
    }
  }
  EXPECT_LT(acc_->elapsed_us(first, first_done), 0.0) << "retired";
  acc_->wait(Stream::Compute, first_done);  // no-op, no throw
  acc_->synchronize(Stream::Compute);
  EXPECT_THROW(acc_->wait(Stream::Compute, Event{first_done.handle + 1000000}), AcceleratorError);
  // A stream left at an early clock keeps later events (a wait could still move it), and
  // recording goes on without a sweep per event.
  for (int i = 0; i < 20000; ++i) acc_->record(Stream::Compute);
  acc_->synchronize(Stream::Compute);
}

// The engine keeps Q4_K and Q8_0 rows interleaved for its CPU kernels; uploads rebuild the rows
// (odd group counts, and a Q8_0 matrix of 4.4 MB).
TEST_F(SimTest, UploadMatrixRebuildsFileRows) {
  test::expect_upload_rebuilds_rows(*acc_, GgmlType::Q4_K, 48, 512, 21);
  test::expect_upload_rebuilds_rows(*acc_, GgmlType::Q8_0, 16, 64, 22);
  test::expect_upload_rebuilds_rows(*acc_, GgmlType::Q8_0, 1024, 4096, 23);
}

struct Span {
  double start, end;
};

std::vector<Span> spans_on(const TraceRecorder& trace, const std::string& track,
                           const std::string& prefix) {
  std::vector<Span> out;
  for (const TraceSpan& s : trace.spans()) {
    if (s.track == track && s.name.rfind(prefix, 0) == 0)
      out.push_back({s.start_us, s.start_us + s.dur_us});
  }
  return out;
}

// Layer l's experts compute from one of two device slots while layer l+1's weights are copied
// into the other: the trace must show copies overlapping compute in virtual time, with every
// dependency respected, and the results must equal the CPU.
TEST_F(SimTest, CopiesOfNextLayerOverlapComputeInVirtualTime) {
  const int n_layers = 4, n_experts = 2, n_tokens = 4, n_embd = 256, n_ff = 512;
  std::vector<std::vector<HostMatrix>> layers(n_layers);  // [layer][expert * 3 + {gate, up, down}]
  std::vector<std::vector<uint8_t>> blobs(n_layers);      // each layer's weights, contiguous
  for (int l = 0; l < n_layers; ++l) {
    for (int e = 0; e < n_experts; ++e) {
      const uint32_t seed = 100 + 10 * l + 3 * e;
      layers[l].push_back(random_matrix(GgmlType::Q8_0, n_ff, n_embd, seed));
      layers[l].push_back(random_matrix(GgmlType::Q8_0, n_ff, n_embd, seed + 1));
      layers[l].push_back(random_matrix(GgmlType::Q8_0, n_embd, n_ff, seed + 2));
    }
    for (const HostMatrix& m : layers[l])
      blobs[l].insert(blobs[l].end(), m.bytes.begin(), m.bytes.end());
  }
  const std::vector<float> x = random_floats(n_tokens * n_embd, 17);
  const DeviceBuffer dx = upload(x), scratch = alloc(2ull * n_tokens * n_ff * sizeof(float));
  const DeviceBuffer slot[2] = {alloc(blobs[0].size()), alloc(blobs[0].size())};
  std::vector<DeviceBuffer> outs;
  for (int i = 0; i < n_layers * n_experts; ++i)
    outs.push_back(alloc(n_tokens * n_embd * sizeof(float)));

  std::vector<Event> copied(n_layers), computed(n_layers);
  acc_->copy_to_device(Stream::Copy, slot[0], 0, blobs[0].data(), blobs[0].size());
  copied[0] = acc_->record(Stream::Copy);
  for (int l = 0; l < n_layers; ++l) {
    if (l + 1 < n_layers) {
      // Slot (l+1)%2 is free once layer l-1 (which used it) has computed.
      if (l >= 1) acc_->wait(Stream::Copy, computed[l - 1]);
      acc_->copy_to_device(Stream::Copy, slot[(l + 1) % 2], 0, blobs[l + 1].data(),
                           blobs[l + 1].size());
      copied[l + 1] = acc_->record(Stream::Copy);
    }
    acc_->wait(Stream::Compute, copied[l]);
    uint64_t offset = 0;
    std::vector<DeviceMatrix> m;
    for (const HostMatrix& h : layers[l]) {
      m.push_back(DeviceMatrix{h.type, slot[l % 2], offset, h.n_rows, h.n_cols, h.stride});
      offset += h.bytes.size();
    }
    for (int e = 0; e < n_experts; ++e) {
      acc_->expert_ffn(DeviceExpert{m[3 * e], m[3 * e + 1], m[3 * e + 2]}, dx, n_tokens, scratch,
                       outs[l * n_experts + e]);
    }
    computed[l] = acc_->record(Stream::Compute);
  }
  acc_->synchronize(Stream::Copy);
  acc_->synchronize(Stream::Compute);

  for (int l = 0; l < n_layers; ++l) {
    for (int e = 0; e < n_experts; ++e) {
      std::vector<float> scratch_host(2 * n_tokens * n_ff), want(n_tokens * n_embd);
      const HostMatrix* h = &layers[l][3 * e];
      sim_expert_ffn(h[0].ref(), h[1].ref(), h[2].ref(), x.data(), n_tokens, scratch_host.data(),
                     want.data());
      expect_bitwise_equal(download(outs[l * n_experts + e], want.size()), want,
                           "layer " + std::to_string(l));
    }
  }

  const std::vector<Span> copies = spans_on(trace_, "sim pcie copy", "h2d");
  const std::vector<Span> experts = spans_on(trace_, "sim gpu compute", "expert_ffn");
  ASSERT_EQ(copies.size(), static_cast<size_t>(n_layers));
  ASSERT_EQ(experts.size(), static_cast<size_t>(n_layers * n_experts));
  double serial = 0.0, makespan = 0.0;
  int n_overlapping = 0;
  for (int l = 0; l < n_layers; ++l) {
    const Span first = experts[l * n_experts], last = experts[l * n_experts + n_experts - 1];
    EXPECT_GE(first.start, copies[l].end)
        << "layer " << l << " computed before its weights arrived";
    if (l >= 2) {
      EXPECT_GE(copies[l].start, experts[(l - 1) * n_experts - 1].end) << "slot overwritten in use";
    }
    if (l + 1 < n_layers && copies[l + 1].start < last.end && first.start < copies[l + 1].end)
      ++n_overlapping;
  }
  for (const auto* list : {&copies, &experts}) {
    for (const Span& s : *list) {
      serial += s.end - s.start;
      makespan = std::max(makespan, s.end);
    }
  }
  EXPECT_GE(n_overlapping, n_layers - 1)
      << "copies of layer l+1 never overlapped layer l's compute";
  EXPECT_LT(makespan - copies[0].start, serial) << "no time saved by overlap";

  // The same spans reach the Chrome trace with the sim tracks named.
  const nlohmann::json doc = nlohmann::json::parse(trace_.chrome_trace_json());
  std::set<std::string> tracks;
  int n_complete = 0;
  for (const auto& ev : doc["traceEvents"]) {
    if (ev["ph"] == "M" && ev["name"] == "thread_name")
      tracks.insert(ev["args"]["name"].get<std::string>());
    if (ev["ph"] == "X") {
      ++n_complete;
      for (const char* key : {"name", "cat", "ts", "dur", "pid", "tid", "args"})
        EXPECT_TRUE(ev.contains(key));
    }
  }
  EXPECT_TRUE(tracks.count("sim gpu compute") && tracks.count("sim pcie copy"));
  EXPECT_EQ(static_cast<size_t>(n_complete), trace_.size());
}

// An op's error that surfaces in release() is reported, and the buffer is still freed.
TEST_F(SimTest, ReleaseAfterFailedOpStillFrees) {
  const HostMatrix table = random_matrix(GgmlType::F32, 4, 32, 18);
  const DeviceMatrix dt = upload(table);
  const DeviceBuffer bad = upload(std::vector<int32_t>{-1});
  DeviceBuffer y = acc_->allocate(32 * sizeof(float));
  const uint64_t before = acc_->live_bytes();
  acc_->embedding(dt, bad, 1, y);
  EXPECT_THROW(acc_->release(y), AcceleratorError);
  EXPECT_EQ(acc_->live_bytes(), before - 32 * sizeof(float));
  acc_->synchronize(Stream::Compute);  // the error was reported once
}

}  // namespace
}  // namespace tandem
