#include "engine/engine.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <stdexcept>
#include <string>

#include "cpu/arena.h"
#include "cpu/half.h"
#include "cpu/matmul.h"
#include "cpu/ops.h"
#include "cpu/quant.h"
#include "engine/attention.h"
#include "engine/expert_executor.h"
#include "engine/model.h"
#include "engine/moe.h"
#include "gpu/accelerator.h"
#include "scheduler/deferral.h"

namespace tandem {
namespace {

MatrixRef matrix(const TensorView& t) {
  return MatrixRef{t.type, t.data, t.ne[1], t.ne[0], t.row_stride()};
}

const float* f32(const TensorView& t) {
  return reinterpret_cast<const float*>(t.data);
}

void grow(std::vector<float>& v, size_t n) {
  if (v.size() < n) v.resize(n);
}

void add_bias(float* rows, const TensorView& bias, int64_t n_tokens, int64_t n) {
  const float* b = f32(bias);
  for (int64_t t = 0; t < n_tokens; ++t) {
    for (int64_t i = 0; i < n; ++i) rows[t * n + i] += b[i];
  }
}

}  // namespace

struct Engine::State {
  bool weights_page_locked = false;
  double page_lock_seconds = 0;
  CpuArena arena;
  KvCache kv;
  std::vector<int32_t> seq_len;  // cached positions per sequence
  // Activations of the current batch ([n_tokens][width]).
  std::vector<float> x, xn, q, k, v, attn, proj, ffn_out;
  std::vector<float> xn_next;    // [n_tokens][n_embd] the next layer's router input, predicted
  Routing predicted;             // the next layer's routing as predicted from this layer
  std::vector<float> deferred;   // [n_tokens][n_embd] expert outputs awaiting the next layer
  std::vector<float> logits_in;  // [n_out][n_embd]
  std::vector<float> rope;       // [n_tokens][n_rot] cos/sin pairs
  MoeScratch moe;
  Routing routing;
  std::unique_ptr<ExpertExecutor> experts;

  State(const ModelSpec& spec, const EngineOptions& o)
      : arena(usable_thread_count(o.n_threads)),
        kv(spec.n_layer, o.n_seq_max, o.n_ctx, spec.n_head_kv, spec.head_dim, o.kv_type),
        seq_len(o.n_seq_max, 0) {}

  void reserve(const ModelSpec& s, int64_t n) {
    grow(x, n * s.n_embd);
    grow(xn, n * s.n_embd);
    grow(q, n * s.q_dim());
    grow(k, n * s.kv_dim());
    grow(v, n * s.kv_dim());
    grow(attn, n * s.q_dim());
    grow(proj, n * s.n_embd);
    grow(ffn_out, n * s.n_embd);
    grow(deferred, n * s.n_embd);
    grow(xn_next, n * s.n_embd);
    grow(moe.slot_out, n * s.n_expert_used * s.n_embd);
  }
};

Engine::Engine(const Model& model, const EngineOptions& options)
    : model_(model), options_(options) {
  if (options.n_ctx <= 0 || options.n_seq_max <= 0) {
    throw std::invalid_argument("engine: n_ctx and n_seq_max must be positive");
  }
  sched::check_defer_experts(options.defer_experts, model.spec().n_expert_used,
                             "engine: defer_experts");
  state_ = std::make_unique<State>(model.spec(), options);
  if (options.n_threads > state_->arena.n_threads()) {
    std::fprintf(stderr,
                 "tandem: %d CPU threads asked for, but this process may run %d at once (the "
                 "CPUs it may use): the engine uses %d\n",
                 options.n_threads, state_->arena.n_threads(), state_->arena.n_threads());
  }
  if (options.accelerator) {
    const auto t0 = std::chrono::steady_clock::now();
    state_->weights_page_locked =
        options.accelerator->register_host(model.file().mapping(), model.file().file_size());
    state_->page_lock_seconds =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  }
  try {
    if (!options.accelerator) {
      state_->experts = make_cpu_expert_executor(model, options.trace);
    } else if (options.expert_policy.empty()) {
      state_->experts = make_hybrid_expert_executor(model, *options.accelerator,
                                                    options.expert_cache_bytes, options.trace);
    } else {
      state_->experts = make_scheduled_expert_executor(
          model, *options.accelerator, options.expert_cache_bytes, options.trace,
          SchedulerSettings{options.expert_policy, options.hardware_profile, options.pin_layers,
                            options.expert_eviction});
    }
  } catch (...) {
    if (state_->weights_page_locked) options.accelerator->unregister_host(model.file().mapping());
    throw;
  }
}

const ExpertRunStats& Engine::expert_stats() const {
  return state_->experts->stats();
}

int32_t Engine::cached_experts(int32_t layer) const {
  return state_->experts->cached_experts(layer);
}

Engine::~Engine() {
  // The executor's copies may still read the weights: unregister_host waits for them.
  if (state_->weights_page_locked) options_.accelerator->unregister_host(model_.file().mapping());
}

bool Engine::weights_page_locked() const {
  return state_->weights_page_locked;
}

double Engine::page_lock_seconds() const {
  return state_->page_lock_seconds;
}

int32_t Engine::n_vocab() const {
  return model_.spec().n_vocab;
}

void Engine::clear_sequence(int32_t seq) {
  if (seq < 0 || seq >= options_.n_seq_max) {
    throw std::invalid_argument("engine: sequence id " + std::to_string(seq) + " out of range");
  }
  state_->seq_len[seq] = 0;
}

namespace {

// Checks ids and positions: per sequence, positions in the batch are increasing and the first
// one is at most the cached length (a lower one rewinds the sequence).
void validate_batch(std::span<const BatchEntry> batch, const EngineOptions& o, int32_t n_vocab,
                    std::vector<int32_t>& seq_len) {
  std::vector<int32_t> next(seq_len);
  std::vector<bool> seen(seq_len.size(), false);
  for (size_t i = 0; i < batch.size(); ++i) {
    const BatchEntry& e = batch[i];
    const std::string where = "engine: batch entry " + std::to_string(i) + ": ";
    if (e.token < 0 || e.token >= n_vocab)
      throw std::invalid_argument(where + "token id " + std::to_string(e.token) + " out of range");
    if (e.seq < 0 || e.seq >= o.n_seq_max)
      throw std::invalid_argument(where + "sequence id " + std::to_string(e.seq) + " out of range");
    if (e.pos < 0 || e.pos >= o.n_ctx)
      throw std::invalid_argument(where + "position " + std::to_string(e.pos) +
                                  " outside the context of " + std::to_string(o.n_ctx));
    const int32_t limit = seen[e.seq] ? next[e.seq] : seq_len[e.seq];
    if (seen[e.seq] ? e.pos != next[e.seq] : e.pos > limit) {
      throw std::invalid_argument(where + "position " + std::to_string(e.pos) + " of sequence " +
                                  std::to_string(e.seq) + " does not follow its cached length " +
                                  std::to_string(limit));
    }
    seen[e.seq] = true;
    next[e.seq] = e.pos + 1;
  }
  for (size_t s = 0; s < seq_len.size(); ++s) {
    if (seen[s]) seq_len[s] = next[s];
  }
}

}  // namespace

void Engine::forward(std::span<const BatchEntry> batch, std::vector<float>& logits) {
  const ModelSpec& s = model_.spec();
  State& st = *state_;
  const int64_t n = static_cast<int64_t>(batch.size());
  if (n == 0) {
    logits.clear();
    return;
  }
  validate_batch(batch, options_, s.n_vocab, st.seq_len);
  st.reserve(s, n);
  CpuArena* arena = &st.arena;
  // A step is a chain of short parallel products: the arena's workers spin between them.
  const CpuArena::HotTeam team(st.arena);

  // Token embeddings: rows of token_embd dequantized to f32.
  const TensorView& embd = model_.token_embd();
  for (int64_t t = 0; t < n; ++t) {
    dequantize_row(embd.type, embd.data + batch[t].token * embd.row_stride(),
                   st.x.data() + t * s.n_embd, s.n_embd);
  }

  rope_table(s, batch, st.rope);

  bool deferred_pending = false;
  for (int32_t il = 0; il < s.n_layer; ++il) {
    const LayerWeights& w = model_.layers()[il];
    // Attention block.
    for (int64_t t = 0; t < n; ++t) {
      rms_norm(st.x.data() + t * s.n_embd, f32(w.attn_norm), s.n_embd, s.rms_eps,
               st.xn.data() + t * s.n_embd);
    }
    // One batch: the three products share the activation pack and a single fork/join.
    const MatmulJob qkv[] = {{matrix(w.wq), st.xn.data(), n, st.q.data()},
                             {matrix(w.wk), st.xn.data(), n, st.k.data()},
                             {matrix(w.wv), st.xn.data(), n, st.v.data()}};
    matmul_many(qkv, arena);
    if (s.qkv_bias) {
      add_bias(st.q.data(), w.bq, n, s.q_dim());
      add_bias(st.k.data(), w.bk, n, s.kv_dim());
      add_bias(st.v.data(), w.bv, n, s.kv_dim());
    }
    normalize_and_rotate_qk(s, w, batch, st.rope.data(), st.q.data(), st.k.data());
    st.kv.store(il, batch, st.k.data(), st.v.data());
    attend(s, st.kv, il, batch, st.q.data(), st.attn.data(), arena);
    matmul(matrix(w.wo), st.attn.data(), n, st.proj.data(), arena);
    for (int64_t i = 0; i < n * s.n_embd; ++i) st.x[i] += st.proj[i];
    if (deferred_pending) {  // the previous layer's deferred experts join after attention
      for (int64_t i = 0; i < n * s.n_embd; ++i) st.x[i] += st.deferred[i];
      deferred_pending = false;
    }

    // Mixture-of-experts block.
    for (int64_t t = 0; t < n; ++t) {
      rms_norm(st.x.data() + t * s.n_embd, f32(w.ffn_norm), s.n_embd, s.rms_eps,
               st.xn.data() + t * s.n_embd);
    }
    compute_routing(s, w, st.xn.data(), static_cast<int32_t>(n), st.moe, arena, st.routing);
    if (options_.routing_observer) options_.routing_observer(il, batch, st.routing);
    if (il + 1 < s.n_layer && st.experts->wants_prediction()) {
      // The next layer's router on this layer's post-attention state: its likely experts,
      // known early enough to copy them while this layer's experts run.
      const LayerWeights& next = model_.layers()[il + 1];
      for (int64_t t = 0; t < n; ++t) {
        rms_norm(st.x.data() + t * s.n_embd, f32(next.ffn_norm), s.n_embd, s.rms_eps,
                 st.xn_next.data() + t * s.n_embd);
      }
      compute_routing(s, next, st.xn_next.data(), static_cast<int32_t>(n), st.moe, arena,
                      st.predicted);
      st.experts->predict(il + 1, st.predicted);
    }
    group_by_expert(st.routing, s.n_expert, st.moe.groups);
    st.experts->run_layer(il, st.routing, st.moe.groups, st.xn.data(), st.moe, arena);
    if (options_.defer_experts > 0 && il + 1 < s.n_layer) {
      combine_slots_deferring(st.routing, s.n_embd, st.moe, options_.defer_experts,
                              st.ffn_out.data(), st.deferred.data());
      deferred_pending = true;
    } else {
      combine_slots(st.routing, s.n_embd, st.moe, st.ffn_out.data());
    }
    if (s.n_ff_shared > 0)
      add_shared_expert(s, w, st.xn.data(), static_cast<int32_t>(n), st.moe, arena,
                        st.ffn_out.data());
    for (int64_t i = 0; i < n * s.n_embd; ++i) st.x[i] += st.ffn_out[i];
  }

  // Output head, only for the rows asked for.
  int64_t n_out = 0;
  grow(st.logits_in, n * s.n_embd);
  for (int64_t t = 0; t < n; ++t) {
    if (!batch[t].logits) continue;
    rms_norm(st.x.data() + t * s.n_embd, f32(model_.output_norm()), s.n_embd, s.rms_eps,
             st.logits_in.data() + n_out * s.n_embd);
    ++n_out;
  }
  logits.resize(static_cast<size_t>(n_out) * s.n_vocab);
  if (n_out > 0) matmul(matrix(model_.output()), st.logits_in.data(), n_out, logits.data(), arena);
}

}  // namespace tandem
