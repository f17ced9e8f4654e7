// The accelerator and trace options shared by run, bench and serve:
//   --gpu none|sim|N  --gpu-budget GB  --expert-cache GB  --hardware FILE  --policy NAME
//   --pin-layers L,L  --eviction E  --defer-experts D  --trace FILE
#pragma once

#include <memory>
#include <string>

#include "engine/engine.h"
#include "engine/model.h"
#include "engine/trace.h"
#include "gpu/accelerator.h"
#include "gpu/accelerator_factory.h"
#include "server/cli_args.h"
#include "server/routing_recorder.h"

namespace tandem {

class AcceleratorSetup {
 public:
  static constexpr const char* kHelp =
      "  --gpu none|sim|N      accelerator: none (default), sim (modelled GPU: results computed\n"
      "                        on the CPU, times from --hardware) or a CUDA device index\n"
      "  --gpu-budget GB       device memory to use (default: all of it)\n"
      "  --expert-cache GB     device memory for cached experts (default: budget - 256 MiB)\n"
      "  --hardware FILE       hardware profile of the sim (default\n"
      "                        configs/hardware/rtx4090-ddr5-desktop.json)\n"
      "  --policy NAME         expert placement with an accelerator: tandem (default; auto is\n"
      "                        the same), hybrimoe, fiddler, static or cpu-experts\n"
      "  --pin-layers L,L,...  layers whose experts stay on the accelerator (tandem)\n"
      "  --eviction E          tandem's expert cache ranking: next-use (default), score, lru, lfu\n"
      "  --defer-experts D     expert deferral: each token's D lowest-weight experts join the\n"
      "                        hidden state after the next layer's attention (approximation;\n"
      "                        default 0 = off; docs/scheduler.md)\n"
      "  --trace FILE          write a Chrome/Perfetto trace of expert work and device ops\n"
      "  --record-routing FILE write every MoE layer's routing as JSON lines (tandem sim\n"
      "                        --routing FILE replays them; docs/scheduler.md)\n";

  // Consumes `option` (and its value from r) when it is one of ours.
  bool parse_option(const std::string& option, ArgReader& r);
  // Creates the trace recorder, routing recorder and accelerator and points the engine options
  // at them. Keep this object alive longer than the engine.
  void apply(EngineOptions& options, const Model& model);
  // Writes the trace file when --trace was given (call after the engine is gone).
  void finish() const;

  GpuConfig gpu;
  std::string policy = "auto";  // the scheduler's placement policy (config scheduler.policy)
  int32_t defer_experts = 0;    // config scheduler.defer_experts
  std::vector<int32_t> pin_layers;    // config scheduler.pin_layers
  std::string eviction = "next-use";  // config scheduler.eviction
  std::string trace_path;
  std::string routing_path;

 private:
  std::unique_ptr<TraceRecorder> trace_;
  std::unique_ptr<RoutingRecorder> routing_;
  std::unique_ptr<Accelerator> accelerator_;
};

// Throws UsageError naming `where` and the valid names unless `name` is a placement policy.
void validate_policy(const std::string& name, const std::string& where);
// The same for a cache ranking (fixed is not one a user picks).
void validate_eviction(const std::string& name, const std::string& where);

}  // namespace tandem
