// The mixture-of-experts FFN of one layer: routing (softmax, top-k, optional renormalisation)
// and expert execution over the tokens of a batch, grouped per expert.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "cpu/matmul.h"
#include "engine/model.h"

namespace tandem {

class CpuArena;

// Expert `expert`'s matrix inside an [n_cols, n_rows, n_expert] tensor (gate_exps, up_exps,
// down_exps).
MatrixRef expert_matrix(const TensorView& t, int32_t expert);

// Top-k routing of n_tokens tokens: for token t and slot j (0..k-1, in descending probability),
// expert[t*k + j] and weight[t*k + j].
struct Routing {
  int32_t n_tokens = 0;
  int32_t k = 0;
  std::vector<int32_t> expert;
  std::vector<float> weight;
};

// Tokens of the batch that an expert serves: token index and the slot it holds in its top-k.
struct ExpertTokens {
  int32_t expert = 0;
  std::vector<int32_t> token;
  std::vector<int32_t> slot;
};

// Reusable buffers for one layer's expert work ([rows][cols] noted per buffer).
struct MoeScratch {
  std::vector<float> router_logits;  // [n_tokens][n_expert]
  std::vector<float> gathered;       // [m][n_embd]   tokens of one expert
  std::vector<float> gate;           // [m][n_ff]
  std::vector<float> up;             // [m][n_ff]
  std::vector<float> down;           // [m][n_embd]
  std::vector<float> slot_out;       // [n_tokens][k][n_embd]  each slot's weighted expert output
  std::vector<ExpertTokens> groups;  // one per expert (reused)
  std::vector<int32_t> order;        // [n_expert] expert ids being ranked
  std::vector<MatmulJob> jobs;       // run_experts' product batch (reused)
  std::vector<const ExpertTokens*> active;  // groups with tokens (reused)
};

// Router logits -> probabilities -> top-k (ties: lower expert id first), renormalised when
// the architecture says so.
void compute_routing(const ModelSpec& spec, const LayerWeights& w, const float* xn,
                     int32_t n_tokens, MoeScratch& scratch, CpuArena* arena, Routing& routing);

// Groups the routed (token, slot) pairs by expert; only experts with tokens are listed.
void group_by_expert(const Routing& routing, int32_t n_expert, std::vector<ExpertTokens>& groups);

// Copies the rows of xn ([n_tokens][n_embd]) that the group's tokens use into out ([m][n_embd]).
void gather_rows(const ExpertTokens& group, const float* xn, int64_t n_embd, float* out);

// Writes weight * rows[i] into slot_out at each (token, slot) of the group.
void scatter_weighted(const ExpertTokens& group, const Routing& routing, const float* rows,
                      int64_t n_embd, float* slot_out);

// Runs one expert's SiLU-gated FFN on its gathered tokens on the CPU and writes
// weight * output into scratch.slot_out at each (token, slot).
void run_expert(const ModelSpec& spec, const LayerWeights& w, const ExpertTokens& group,
                const Routing& routing, const float* xn, MoeScratch& scratch, CpuArena* arena);

// run_expert for several experts at once, with the same results: their products go to the
// CPU arena as one batch per projection (cpu/matmul.h matmul_many), so a decode step pays two
// fork/joins per layer instead of six per expert.
void run_experts(const ModelSpec& spec, const LayerWeights& w,
                 std::span<const ExpertTokens* const> groups, const Routing& routing,
                 const float* xn, MoeScratch& scratch, CpuArena* arena);

// out[t] = sum over slots in order of slot_out[t][j] (llama.cpp's summation order).
void combine_slots(const Routing& routing, int32_t n_embd, const MoeScratch& scratch, float* out);

// Expert deferral: per token, the n_defer slots of lowest gate weight (ties: the later slot)
// go to deferred[t], the others to out[t], each summed in slot order. n_defer < routing.k.
void combine_slots_deferring(const Routing& routing, int32_t n_embd, const MoeScratch& scratch,
                             int32_t n_defer, float* out, float* deferred);

// The shared expert of qwen2moe-style layers: out[t] += sigmoid(g . x) * FFN_shared(x).
void add_shared_expert(const ModelSpec& spec, const LayerWeights& w, const float* xn,
                       int32_t n_tokens, MoeScratch& scratch, CpuArena* arena, float* out);

}  // namespace tandem
