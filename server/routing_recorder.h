// --record-routing FILE: writes every MoE layer's routing of every forward step as the JSON
// lines `tandem sim --routing` replays (docs/scheduler.md, "Routing traces"). Lines are
// streamed as the engine runs, so a long-running server keeps no trace in memory.
#pragma once

#include <cstdint>
#include <fstream>
#include <span>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/moe.h"

namespace tandem {

class Model;

class RoutingRecorder {
 public:
  // Opens `path` and writes the header; throws std::runtime_error naming the file.
  RoutingRecorder(const std::string& path, const Model& model);
  // The engine's routing observer: one line per sequence in the batch for this layer.
  void observe(int32_t layer, std::span<const BatchEntry> batch, const Routing& routing);

 private:
  struct SequenceState {
    int32_t trace_seq = -1;  // id in the trace: each new sequence (position 0) gets a fresh one
    int32_t step = -1;
  };
  std::ofstream out_;
  std::string path_;
  int32_t n_expert_used_ = 0;
  int32_t next_trace_seq_ = 0;
  std::vector<SequenceState> seqs_;
};

}  // namespace tandem
