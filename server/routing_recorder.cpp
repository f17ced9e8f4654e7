#include "server/routing_recorder.h"

#include <stdexcept>

#include <nlohmann/json.hpp>

#include "engine/model.h"

namespace tandem {

RoutingRecorder::RoutingRecorder(const std::string& path, const Model& model)
    : out_(path), path_(path), n_expert_used_(model.spec().n_expert_used) {
  if (!out_) throw std::runtime_error("cannot write routing trace '" + path + "'");
  const ModelSpec& s = model.spec();
  const nlohmann::json header = {
      {"format", "tandem-routing"}, {"version", 1},           {"model", s.arch},
      {"n_layer", s.n_layer},       {"n_expert", s.n_expert}, {"n_expert_used", s.n_expert_used}};
  out_ << header.dump() << '\n';
}

void RoutingRecorder::observe(int32_t layer, std::span<const BatchEntry> batch,
                              const Routing& routing) {
  // Rows of the batch per sequence, in batch order.
  std::vector<std::vector<size_t>> rows;
  std::vector<int32_t> seq_of;
  for (size_t i = 0; i < batch.size(); ++i) {
    const int32_t seq = batch[i].seq;
    if (static_cast<size_t>(seq) >= seqs_.size()) seqs_.resize(static_cast<size_t>(seq) + 1);
    size_t k = 0;
    while (k < seq_of.size() && seq_of[k] != seq) ++k;
    if (k == seq_of.size()) {
      seq_of.push_back(seq);
      rows.emplace_back();
    }
    rows[k].push_back(i);
  }
  const int32_t kk = n_expert_used_;
  for (size_t k = 0; k < seq_of.size(); ++k) {
    SequenceState& st = seqs_[static_cast<size_t>(seq_of[k])];
    const BatchEntry& first = batch[rows[k].front()];
    if (layer == 0) {
      if (first.pos == 0 || st.trace_seq < 0) {
        st.trace_seq = next_trace_seq_++;
        st.step = 0;
      } else {
        ++st.step;
      }
    }
    nlohmann::json experts = nlohmann::json::array(), weights = nlohmann::json::array();
    for (size_t i : rows[k]) {
      nlohmann::json e = nlohmann::json::array(), w = nlohmann::json::array();
      for (int32_t j = 0; j < kk; ++j) {
        e.push_back(routing.expert[i * kk + j]);
        w.push_back(routing.weight[i * kk + j]);
      }
      experts.push_back(std::move(e));
      weights.push_back(std::move(w));
    }
    const bool prefill = rows[k].size() > 1 || first.pos == 0;
    const nlohmann::json line = {{"seq", st.trace_seq},
                                 {"step", st.step},
                                 {"phase", prefill ? "prefill" : "decode"},
                                 {"layer", layer},
                                 {"experts", std::move(experts)},
                                 {"weights", std::move(weights)}};
    out_ << line.dump() << '\n';
  }
  if (layer == 0 && !out_) throw std::runtime_error("failed writing routing trace '" + path_ + "'");
}

}  // namespace tandem
