#include "engine/decode_weight_reads.h"

#include <algorithm>
#include <chrono>
#include <numeric>

#include "engine/model.h"
#include "engine/moe.h"

namespace tandem {

namespace {

// Small enough that both threads share a projection of a few MB, as decode's row chunks do.
constexpr uint64_t kPieceBytes = uint64_t{256} << 10;

void add_pieces(const TensorView& t, std::vector<ByteRegion>& group) {
  for (uint64_t at = 0; at < t.n_bytes; at += kPieceBytes)
    group.push_back({t.data + at, std::min(kPieceBytes, t.n_bytes - at)});
}

ByteRegion expert_region(const TensorView& t, int32_t expert) {
  const MatrixRef m = expert_matrix(t, expert);
  return {static_cast<const uint8_t*>(m.data), static_cast<uint64_t>(m.n_rows * m.row_stride)};
}

}  // namespace

std::vector<std::vector<ByteRegion>> decode_step_reads(const Model& model, std::mt19937& rng) {
  const ModelSpec& spec = model.spec();
  std::vector<std::vector<ByteRegion>> groups;
  const TensorView& embd = model.token_embd();
  const auto n_rows = static_cast<uint32_t>(std::max<int64_t>(embd.ne[1], 1));
  const uint64_t row = std::uniform_int_distribution<uint32_t>(0, n_rows - 1)(rng);
  groups.push_back({{embd.data + row * static_cast<uint64_t>(embd.row_stride()),
                     static_cast<uint64_t>(embd.row_stride())}});
  std::vector<int32_t> experts(static_cast<size_t>(spec.n_expert));
  for (const LayerWeights& w : model.layers()) {
    std::vector<ByteRegion> qkv;
    for (const TensorView* t : {&w.wq, &w.wk, &w.wv}) add_pieces(*t, qkv);
    groups.push_back(std::move(qkv));
    for (const TensorView* t : {&w.wo, &w.router}) {
      groups.emplace_back();
      add_pieces(*t, groups.back());
    }
    if (spec.n_expert > 0) {
      std::iota(experts.begin(), experts.end(), 0);
      std::shuffle(experts.begin(), experts.end(), rng);
      std::vector<ByteRegion> gate_up, down;
      for (int32_t i = 0; i < std::min(spec.n_expert_used, spec.n_expert); ++i) {
        const int32_t e = experts[static_cast<size_t>(i)];
        gate_up.push_back(expert_region(w.gate_exps, e));
        gate_up.push_back(expert_region(w.up_exps, e));
        down.push_back(expert_region(w.down_exps, e));
      }
      groups.push_back(std::move(gate_up));
      groups.push_back(std::move(down));
    }
    if (w.gate_shexp.n_bytes > 0) {
      groups.emplace_back();
      add_pieces(w.gate_shexp, groups.back());
      add_pieces(w.up_shexp, groups.back());
      groups.emplace_back();
      add_pieces(w.down_shexp, groups.back());
    }
  }
  groups.emplace_back();
  add_pieces(model.output(), groups.back());
  return groups;
}

double measure_decode_weight_reads(const Model& model, CpuArena* arena, int steps, int reps) {
  std::mt19937 rng(4321);
  std::vector<std::vector<std::vector<ByteRegion>>> all_steps;
  uint64_t bytes = 0;
  for (int s = 0; s < steps; ++s) {
    all_steps.push_back(decode_step_reads(model, rng));
    for (const auto& group : all_steps.back())
      for (const ByteRegion& r : group) bytes += r.bytes;
  }
  uint64_t sum = 0;
  double best = 0.0;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    // Through TBB, not a hot team as decode steps use: plain reads measured a few % faster so.
    for (const auto& step : all_steps)
      for (const auto& group : step) sum += read_regions(group, arena);
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    if (s > 0) best = std::max(best, static_cast<double>(bytes) / s / 1e9);
  }
  return sum == 1 ? 0.0 : best;  // the comparison keeps the sums from being elided
}

}  // namespace tandem
