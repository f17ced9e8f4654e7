// The plain reads behind `tandem bench --roofline`'s second bandwidth figure: every byte of
// every region is read (odd sizes, unaligned starts, one thread or several), and one decode
// step's reads cover exactly the bytes a decoded token reads, with distinct experts per layer.
#include <gtest/gtest.h>

#include <cstring>
#include <random>
#include <set>
#include <vector>

#include "cpu/arena.h"
#include "cpu/memory_bandwidth.h"
#include "engine/decode_weight_reads.h"
#include "engine/model.h"
#include "tests/test_support.h"
#include "tools/gen_model.h"

namespace tandem {
namespace {

// The sum read_regions promises: each region's 64-bit words, then its tail bytes one by one.
uint64_t reference_sum(const std::vector<ByteRegion>& regions) {
  uint64_t sum = 0;
  for (const ByteRegion& r : regions) {
    uint64_t b = 0;
    for (; b + 8 <= r.bytes; b += 8) {
      uint64_t word;
      std::memcpy(&word, r.data + b, sizeof(word));
      sum += word;
    }
    for (; b < r.bytes; ++b) sum += r.data[b];
  }
  return sum;
}

TEST(ReadRegions, ReadsEveryByteOfOddUnalignedRegions) {
  std::mt19937 rng(5);
  std::vector<uint8_t> buffer(1 << 20);
  for (uint8_t& b : buffer) b = static_cast<uint8_t>(rng());
  std::vector<ByteRegion> regions;
  // Starts off any word boundary, lengths below, at and across the 256-byte unroll.
  const uint64_t sizes[] = {0, 1, 7, 8, 9, 255, 256, 257, 4099, 65536 + 3, 300001};
  uint64_t at = 3;
  for (uint64_t size : sizes) {
    regions.push_back({buffer.data() + at, size});
    at += size + 5;
  }
  ASSERT_LE(at, buffer.size());
  const uint64_t expect = reference_sum(regions);
  EXPECT_EQ(read_regions(regions, nullptr), expect);
  CpuArena arena(2);
  EXPECT_EQ(read_regions(regions, &arena), expect);
  EXPECT_EQ(read_regions({}, &arena), 0u);
}

class DecodeStepReads : public testing::TestWithParam<const char*> {};

TEST_P(DecodeStepReads, CoverATokensWeightsWithDistinctExperts) {
  const test::TempDir dir("tandem-reads-");
  GenModelOptions o;
  o.arch = GetParam();
  o.output_path = dir.path() + "/model.gguf";
  o.n_threads = 1;
  generate_model(o);
  const auto model = Model::load(o.output_path, GgufMemory::Read, WeightLayout::Cpu);
  const ModelSpec& spec = model->spec();
  const uint8_t* file_begin = model->file().mapping();
  const uint8_t* file_end = file_begin + model->file().file_size();
  std::mt19937 rng(9);
  for (int step = 0; step < 3; ++step) {
    const auto groups = decode_step_reads(*model, rng);
    uint64_t bytes = 0;
    for (const auto& group : groups) {
      for (const ByteRegion& r : group) {
        bytes += r.bytes;
        EXPECT_GE(r.data, file_begin);
        EXPECT_LE(r.data + r.bytes, file_end);
      }
    }
    EXPECT_EQ(bytes, model->bytes_per_token());
    // Each layer's gate/up group: n_expert_used experts, no expert twice.
    for (const LayerWeights& w : model->layers()) {
      const auto is_gate_up = [&](const std::vector<ByteRegion>& g) {
        return !g.empty() && g[0].data >= w.gate_exps.data &&
               g[0].data < w.gate_exps.data + w.gate_exps.n_bytes;
      };
      int found = 0;
      for (const auto& group : groups) {
        if (!is_gate_up(group)) continue;
        ++found;
        ASSERT_EQ(group.size(), 2u * static_cast<size_t>(spec.n_expert_used));
        std::set<const uint8_t*> gates;
        for (size_t i = 0; i < group.size(); i += 2) gates.insert(group[i].data);
        EXPECT_EQ(gates.size(), static_cast<size_t>(spec.n_expert_used));
      }
      EXPECT_EQ(found, 1);
    }
  }
  CpuArena arena(2);
  EXPECT_GT(measure_decode_weight_reads(*model, &arena, 2, 1), 0.0);
}

// qwen2moe has a shared expert; mixtral has no q/k norms.
INSTANTIATE_TEST_SUITE_P(Archs, DecodeStepReads,
                         testing::Values("qwen3moe", "qwen2moe", "mixtral"));

}  // namespace
}  // namespace tandem
