#include "engine/moe.h"

#include <algorithm>
#include <cmath>
#include <span>

#include "cpu/arena.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "scheduler/deferral.h"

namespace tandem {
MatrixRef expert_matrix(const TensorView& t, int32_t expert) {
  const int64_t stride = t.row_stride();
  return MatrixRef{t.type, t.data + expert * stride * t.ne[1], t.ne[1], t.ne[0], stride};
}

namespace {

MatrixRef matrix(const TensorView& t) {
  return MatrixRef{t.type, t.data, t.ne[1], t.ne[0], t.row_stride()};
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

}  // namespace

void compute_routing(const ModelSpec& spec, const LayerWeights& w, const float* xn,
                     int32_t n_tokens, MoeScratch& scratch, CpuArena* arena, Routing& routing) {
  const int32_t n_expert = spec.n_expert, k = spec.n_expert_used;
  grow(scratch.router_logits, static_cast<size_t>(n_tokens) * n_expert);
  matmul(matrix(w.router), xn, n_tokens, scratch.router_logits.data(), arena);
  routing.n_tokens = n_tokens;
  routing.k = k;
  routing.expert.resize(static_cast<size_t>(n_tokens) * k);
  routing.weight.resize(static_cast<size_t>(n_tokens) * k);
  scratch.order.resize(n_expert);
  int32_t* sel = scratch.order.data();
  for (int32_t t = 0; t < n_tokens; ++t) {
    float* probs = scratch.router_logits.data() + static_cast<size_t>(t) * n_expert;
    softmax(probs, n_expert);
    // Partial selection of the k largest; lower ids win ties.
    for (int32_t e = 0; e < n_expert; ++e) sel[e] = e;
    std::partial_sort(sel, sel + k, sel + n_expert, [&](int32_t a, int32_t b) {
      return probs[a] > probs[b] || (probs[a] == probs[b] && a < b);
    });
    float sum = 0.0f;
    for (int32_t j = 0; j < k; ++j) sum += probs[sel[j]];
    for (int32_t j = 0; j < k; ++j) {
      routing.expert[t * k + j] = sel[j];
      routing.weight[t * k + j] = spec.norm_topk ? probs[sel[j]] / sum : probs[sel[j]];
    }
  }
}

void group_by_expert(const Routing& routing, int32_t n_expert, std::vector<ExpertTokens>& groups) {
  if (groups.size() < static_cast<size_t>(n_expert)) groups.resize(n_expert);
  for (int32_t e = 0; e < n_expert; ++e) {
    groups[e].expert = e;
    groups[e].token.clear();
    groups[e].slot.clear();
  }
  for (int32_t t = 0; t < routing.n_tokens; ++t) {
    for (int32_t j = 0; j < routing.k; ++j) {
      ExpertTokens& g = groups[routing.expert[t * routing.k + j]];
      g.token.push_back(t);
      g.slot.push_back(j);
    }
  }
}

void gather_rows(const ExpertTokens& group, const float* xn, int64_t n_embd, float* out) {
  for (size_t i = 0; i < group.token.size(); ++i) {
    std::copy_n(xn + group.token[i] * n_embd, n_embd, out + i * n_embd);
  }
}

void scatter_weighted(const ExpertTokens& group, const Routing& routing, const float* rows,
                      int64_t n_embd, float* slot_out) {
  const int32_t k = routing.k;
  for (size_t i = 0; i < group.token.size(); ++i) {
    const int32_t t = group.token[i], j = group.slot[i];
    const float wt = routing.weight[t * k + j];
    float* dst = slot_out + (static_cast<int64_t>(t) * k + j) * n_embd;
    const float* src = rows + i * n_embd;
    for (int64_t c = 0; c < n_embd; ++c) dst[c] = src[c] * wt;
  }
}

void run_expert(const ModelSpec& spec, const LayerWeights& w, const ExpertTokens& group,
                const Routing& routing, const float* xn, MoeScratch& scratch, CpuArena* arena) {
  const int64_t m = static_cast<int64_t>(group.token.size());
  if (m == 0) return;
  const int64_t n_embd = spec.n_embd, n_ff = spec.n_ff_expert;
  grow(scratch.gathered, m * n_embd);
  grow(scratch.gate, m * n_ff);
  grow(scratch.up, m * n_ff);
  grow(scratch.down, m * n_embd);
  gather_rows(group, xn, n_embd, scratch.gathered.data());
  const MatmulJob gate_up[] = {
      {expert_matrix(w.gate_exps, group.expert), scratch.gathered.data(), m, scratch.gate.data()},
      {expert_matrix(w.up_exps, group.expert), scratch.gathered.data(), m, scratch.up.data()}};
  matmul_many(gate_up, arena);  // one activation pack for both products
  swiglu(scratch.gate.data(), scratch.up.data(), m * n_ff, scratch.gate.data());
  matmul(expert_matrix(w.down_exps, group.expert), scratch.gate.data(), m, scratch.down.data(),
         arena);
  scatter_weighted(group, routing, scratch.down.data(), n_embd, scratch.slot_out.data());
}

void run_experts(const ModelSpec& spec, const LayerWeights& w,
                 std::span<const ExpertTokens* const> groups, const Routing& routing,
                 const float* xn, MoeScratch& scratch, CpuArena* arena) {
  // Batches of at most kMaxRows gathered rows bound the scratch in long prompts, where the
  // per-product overhead no longer matters anyway.
  constexpr int64_t kMaxRows = 1024;
  const int64_t n_embd = spec.n_embd, n_ff = spec.n_ff_expert;
  std::vector<MatmulJob>& jobs = scratch.jobs;
  size_t first = 0;
  while (first < groups.size()) {
    size_t last = first;
    int64_t rows = 0;
    while (last < groups.size() &&
           (last == first || rows + static_cast<int64_t>(groups[last]->token.size()) <= kMaxRows)) {
      rows += static_cast<int64_t>(groups[last]->token.size());
      ++last;
    }
    grow(scratch.gathered, rows * n_embd);
    grow(scratch.gate, rows * n_ff);
    grow(scratch.up, rows * n_ff);
    grow(scratch.down, rows * n_embd);
    jobs.clear();
    int64_t offset = 0;
    const float* x = nullptr;
    for (size_t i = first; i < last; ++i) {
      const ExpertTokens& g = *groups[i];
      const auto m = static_cast<int64_t>(g.token.size());
      // Experts that take the same tokens as the previous one (every expert of a decode step)
      // read its gathered rows, and matmul_many then quantizes them once for all of them.
      if (i == first || g.token != groups[i - 1]->token) {
        float* rows_out = scratch.gathered.data() + offset * n_embd;
        gather_rows(g, xn, n_embd, rows_out);
        x = rows_out;
      }
      jobs.push_back(
          {expert_matrix(w.gate_exps, g.expert), x, m, scratch.gate.data() + offset * n_ff});
      jobs.push_back({expert_matrix(w.up_exps, g.expert), x, m, scratch.up.data() + offset * n_ff});
      offset += m;
    }
    matmul_many(jobs, arena);
    if (arena && rows >= 64) {
      arena->parallel_for(0, rows, 16, [&](int64_t lo, int64_t hi) {
        swiglu(scratch.gate.data() + lo * n_ff, scratch.up.data() + lo * n_ff, (hi - lo) * n_ff,
               scratch.gate.data() + lo * n_ff);
      });
    } else {
      swiglu(scratch.gate.data(), scratch.up.data(), rows * n_ff, scratch.gate.data());
    }
    jobs.clear();
    offset = 0;
    for (size_t i = first; i < last; ++i) {
      const ExpertTokens& g = *groups[i];
      const auto m = static_cast<int64_t>(g.token.size());
      jobs.push_back({expert_matrix(w.down_exps, g.expert), scratch.gate.data() + offset * n_ff, m,
                      scratch.down.data() + offset * n_embd});
      offset += m;
    }
    matmul_many(jobs, arena);
    offset = 0;
    for (size_t i = first; i < last; ++i) {
      scatter_weighted(*groups[i], routing, scratch.down.data() + offset * n_embd, n_embd,
                       scratch.slot_out.data());
      offset += static_cast<int64_t>(groups[i]->token.size());
    }
    first = last;
  }
}

void combine_slots(const Routing& routing, int32_t n_embd, const MoeScratch& scratch, float* out) {
  const int32_t k = routing.k;
  for (int32_t t = 0; t < routing.n_tokens; ++t) {
    float* o = out + static_cast<int64_t>(t) * n_embd;
    const float* s = scratch.slot_out.data() + static_cast<int64_t>(t) * k * n_embd;
    std::copy_n(s, n_embd, o);
    for (int32_t j = 1; j < k; ++j) {
      for (int32_t c = 0; c < n_embd; ++c) o[c] += s[j * n_embd + c];
    }
  }
}

void combine_slots_deferring(const Routing& routing, int32_t n_embd, const MoeScratch& scratch,
                             int32_t n_defer, float* out, float* deferred) {
  const int32_t k = routing.k;
  std::vector<int32_t> lowest;
  std::vector<uint8_t> is_deferred(k);
  for (int32_t t = 0; t < routing.n_tokens; ++t) {
    sched::lowest_weight_slots(
        std::span(routing.weight.data() + static_cast<int64_t>(t) * k, static_cast<size_t>(k)),
        n_defer, lowest);
    std::fill(is_deferred.begin(), is_deferred.end(), 0);
    for (int32_t slot : lowest) is_deferred[slot] = 1;
    float* o[2] = {out + static_cast<int64_t>(t) * n_embd,
                   deferred + static_cast<int64_t>(t) * n_embd};
    std::fill_n(o[0], n_embd, 0.0f);
    std::fill_n(o[1], n_embd, 0.0f);
    const float* s = scratch.slot_out.data() + static_cast<int64_t>(t) * k * n_embd;
    for (int32_t j = 0; j < k; ++j) {
      float* dst = o[is_deferred[j]];
      for (int32_t c = 0; c < n_embd; ++c) dst[c] += s[j * n_embd + c];
    }
  }
}

void add_shared_expert(const ModelSpec& spec, const LayerWeights& w, const float* xn,
                       int32_t n_tokens, MoeScratch& scratch, CpuArena* arena, float* out) {
  const int64_t n_embd = spec.n_embd, n_ff = spec.n_ff_shared;
  grow(scratch.gate, n_tokens * n_ff);
  grow(scratch.up, n_tokens * n_ff);
  grow(scratch.down, n_tokens * n_embd);
  grow(scratch.router_logits, n_tokens);
  const MatmulJob gate_up[] = {{matrix(w.gate_shexp), xn, n_tokens, scratch.gate.data()},
                               {matrix(w.up_shexp), xn, n_tokens, scratch.up.data()}};
  matmul_many(gate_up, arena);
  swiglu(scratch.gate.data(), scratch.up.data(), n_tokens * n_ff, scratch.gate.data());
  matmul(matrix(w.down_shexp), scratch.gate.data(), n_tokens, scratch.down.data(), arena);
  // The gate tensor is [n_embd]: one output row.
  const MatrixRef gate_row{w.router_shexp.type, w.router_shexp.data, 1, n_embd,
                           w.router_shexp.row_stride()};
  matmul(gate_row, xn, n_tokens, scratch.router_logits.data(), arena);
  for (int64_t t = 0; t < n_tokens; ++t) {
    const float g = 1.0f / (1.0f + std::exp(-scratch.router_logits[t]));
    for (int64_t c = 0; c < n_embd; ++c) out[t * n_embd + c] += scratch.down[t * n_embd + c] * g;
  }
}

}  // namespace tandem
