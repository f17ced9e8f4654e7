// `tandem calibrate`: times this machine's CPU expert FFN (the engine's run_experts: gate and
// up as one batch, SwiGLU, down) for a model shape and weight types, fits the scheduler's CPU
// expert curves to one set of runs and checks them against a second, independent set.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cpu/arena.h"
#include "cpu/interleave.h"
#include "cpu/quant.h"
#include "engine/moe.h"
#include "gpu/accelerator_factory.h"
#include "scheduler/cost_model.h"
#include "server/cli_args.h"
#include "server/commands.h"

namespace tandem {
namespace {

constexpr const char* kHelp =
    "usage: tandem calibrate [options]\n"
    "  Times one routed expert's FFN on this CPU (the engine's kernels, all threads) for\n"
    "  several token counts, builds the scheduler's CPU expert curve per weight type from one\n"
    "  set of runs (piecewise-linear through their medians), and prints its error against a\n"
    "  second set of runs at the check token counts (both sets timed in the same\n"
    "  round-robin rounds, so a slow spell of the machine hits every count alike).\n"
    "  --shape NAME        expert shape: qwen3-30b-a3b | qwen3-235b-a22b | mixtral-8x7b |\n"
    "                      deepseek-v3 (default qwen3-30b-a3b)\n"
    "  --types LIST        weight types, comma-separated (default q8_0,q4_k)\n"
    "  -t, --threads N     CPU threads (default: physical cores)\n"
    "  --fit-tokens LIST   token counts of the fitting runs (default\n"
    "                      1,2,4,5,8,9,12,13,16,24,48,96,160: both ends of each 4-token tile\n"
    "                      of the row kernels, whose cost steps at every new tile, then sparse;\n"
    "                      so check counts 1-8 repeat fitting counts, 32 and 128 fall between)\n"
    "  --check-tokens LIST token counts of the check runs (default 1,2,4,8,32,128)\n"
    "  --reps N            timed runs per token count, median kept (default 31)\n"
    "  --experts N         distinct experts cycled through, so weights come from DRAM as in\n"
    "                      decode, not from the cache (default 16)\n"
    "  --hardware FILE     hardware profile the written cost model starts from (default\n"
    "                      configs/hardware/rtx4090-ddr5-desktop.json)\n"
    "  -o FILE             write the cost model with the fitted CPU curves (JSON)\n"
    "  --tolerance P       the check passes when every error is within P percent (default 15)\n"
    "Exit status: 0 when the check passes, 3 when some error exceeds the tolerance.\n";

struct CalibrateArgs {
  std::string shape = "qwen3-30b-a3b", hardware, output;
  std::vector<std::string> types = {"q8_0", "q4_k"};
  int threads = 0, reps = 31, experts = 16;
  // Below 16 tokens the row kernels take tokens in tiles of 4 (cpu/tile_driver.h): time is
  // nearly flat inside a tile and steps up at the first token of the next, a staircase that
  // a line between points on either side of a step misses by 20-30%. So both ends of every
  // tile are measured; beyond 16 the blocked kernels are close to linear.
  std::vector<int32_t> fit_tokens = {1, 2, 4, 5, 8, 9, 12, 13, 16, 24, 48, 96, 160};
  std::vector<int32_t> check_tokens = {1, 2, 4, 8, 32, 128};
  double tolerance = 15.0;
};

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    out.push_back(
        text.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

CalibrateArgs parse_args(const Args& args, bool* help) {
  CalibrateArgs a;
  ArgReader r(args);
  while (!r.done()) {
    const std::string opt = r.next();
    if (opt == "-h" || opt == "--help") {
      *help = true;
      return a;
    } else if (opt == "--shape") {
      a.shape = r.value(opt);
    } else if (opt == "--types") {
      a.types = split(r.value(opt));
    } else if (opt == "-t" || opt == "--threads") {
      a.threads = static_cast<int>(r.int_value(opt, 1, 1024));
    } else if (opt == "--fit-tokens") {
      a.fit_tokens = parse_int_list(opt, r.value(opt));
    } else if (opt == "--check-tokens") {
      a.check_tokens = parse_int_list(opt, r.value(opt));
    } else if (opt == "--reps") {
      a.reps = static_cast<int>(r.int_value(opt, 1, 1000));
    } else if (opt == "--experts") {
      a.experts = static_cast<int>(r.int_value(opt, 1, 4096));
    } else if (opt == "--hardware") {
      a.hardware = r.value(opt);
    } else if (opt == "-o") {
      a.output = r.value(opt);
    } else if (opt == "--tolerance") {
      a.tolerance = r.float_value(opt, 0.0, 1000.0);
    } else {
      throw UsageError("unknown option '" + opt + "' (see tandem calibrate --help)");
    }
  }
  for (const std::string& t : a.types) {
    if (!parse_type_name(t)) throw UsageError("--types: unknown weight type '" + t + "'");
  }
  for (const auto* list : {&a.fit_tokens, &a.check_tokens}) {
    for (int32_t n : *list) {
      if (n < 1 || n > 4096)
        throw UsageError("token counts must be 1..4096, got " + std::to_string(n));
    }
  }
  if (a.fit_tokens.size() < 2) throw UsageError("--fit-tokens needs at least two token counts");
  return a;
}

// `n_experts` copies of one random expert (gate, up, down) in `type`, laid out as the engine's
// stacked expert tensors (Q4_K and Q8_0 rows interleaved where this CPU has the kernels).
struct ExpertPool {
  std::vector<uint8_t> gate, up, down;
  LayerWeights layer;
  ModelSpec spec;
};

ExpertPool make_pool(const sched::ModelShape& shape, GgmlType type, int n_experts) {
  const int64_t n_embd = shape.n_embd, n_ff = shape.n_ff_expert;
  ExpertPool p;
  p.spec.n_embd = shape.n_embd;
  p.spec.n_ff_expert = shape.n_ff_expert;
  std::mt19937 rng(7);
  std::normal_distribution<float> dist(0.0f, 0.02f);
  std::vector<float> row(static_cast<size_t>(std::max(n_embd, n_ff)));
  auto fill = [&](std::vector<uint8_t>& bytes, int64_t cols, int64_t rows, TensorView& view) {
    const int64_t stride = row_bytes(type, cols);
    const int64_t one = stride * rows;
    bytes.resize(static_cast<size_t>(one * n_experts));
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) row[c] = dist(rng);
      quantize_row(type, row.data(), bytes.data() + r * stride, cols);
    }
    // The layout the engine computes a model read into memory from (Model::load).
    view.type = type;
    if (worth_interleaving(type, rows, cols)) {
      interleave_rows(type, bytes.data(), rows, cols);
      view.type = *interleaved_type(type);
    }
    for (int e = 1; e < n_experts; ++e) std::memcpy(bytes.data() + e * one, bytes.data(), one);
    view.n_dims = 3;
    view.ne[0] = cols;
    view.ne[1] = rows;
    view.ne[2] = n_experts;
    view.data = bytes.data();
    view.n_bytes = bytes.size();
  };
  fill(p.gate, n_embd, n_ff, p.layer.gate_exps);
  fill(p.up, n_embd, n_ff, p.layer.up_exps);
  fill(p.down, n_ff, n_embd, p.layer.down_exps);
  return p;
}

// One expert's FFN on n tokens, ready to be timed again and again; each run takes the next
// expert of the pool, so its weights come from DRAM.
struct Probe {
  int32_t n_tokens = 0;
  std::vector<float> x;
  Routing routing;
  ExpertTokens group;
  MoeScratch scratch;
  std::vector<double> times_us;

  Probe(int32_t n, int64_t n_embd) : n_tokens(n) {
    std::mt19937 rng(static_cast<uint32_t>(n));
    std::normal_distribution<float> dist(0.0f, 1.0f);
    x.resize(static_cast<size_t>(n * n_embd));
    for (float& v : x) v = dist(rng);
    routing.n_tokens = n;
    routing.k = 1;
    routing.expert.assign(static_cast<size_t>(n), 0);
    routing.weight.assign(static_cast<size_t>(n), 1.0f);
    for (int32_t t = 0; t < n; ++t) {
      group.token.push_back(t);
      group.slot.push_back(0);
    }
    scratch.slot_out.resize(static_cast<size_t>(n * n_embd));
  }

  double run(const ExpertPool& pool, int n_experts, CpuArena& arena, int* next_expert) {
    group.expert = *next_expert;
    *next_expert = (*next_expert + 1) % n_experts;
    const ExpertTokens* groups[] = {&group};
    const auto t0 = std::chrono::steady_clock::now();
    run_experts(pool.spec, pool.layer, groups, routing, x.data(), scratch, &arena);
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
  }

  double median_us() {
    std::nth_element(times_us.begin(), times_us.begin() + times_us.size() / 2, times_us.end());
    return times_us[times_us.size() / 2];
  }
};

// Times every probe `reps` times in round-robin order (after one untimed run each), so a slow
// spell of a shared machine lands on one run of every token count, which the medians drop,
// instead of on every run of a few counts.
void time_interleaved(std::vector<Probe>& probes, const ExpertPool& pool, int n_experts, int reps,
                      CpuArena& arena, int* next_expert) {
  for (Probe& p : probes) p.run(pool, n_experts, arena, next_expert);  // buffers, threads
  for (int rep = 0; rep < reps; ++rep) {
    for (Probe& p : probes) p.times_us.push_back(p.run(pool, n_experts, arena, next_expert));
  }
}

}  // namespace

int cmd_calibrate(const Args& args) {
  bool help = false;
  const CalibrateArgs a = parse_args(args, &help);
  if (help) {
    std::printf("%s", kHelp);
    return 0;
  }
  sched::ModelShape shape = sched::named_shape(a.shape, a.types.front());
  CpuArena arena(a.threads);
  std::printf("calibrate: %s expert (%d x %d), %d threads, median of %d runs, %d experts cycled\n",
              shape.name.c_str(), shape.n_embd, shape.n_ff_expert, arena.n_threads(), a.reps,
              a.experts);
  const std::string hw_path = a.hardware.empty() ? default_hardware_profile_path() : a.hardware;
  sched::CostModel cost =
      sched::CostModel::from_hardware(sched::load_hardware_spec(hw_path), shape);
  std::printf("%-6s %7s %12s %12s %8s\n", "type", "tokens", "measured_us", "predicted_us", "error");
  bool all_within = true;
  for (const std::string& type_name_text : a.types) {
    const GgmlType type = *parse_type_name(type_name_text);
    const ExpertPool pool = make_pool(shape, type, a.experts);
    int next = 0;
    // Untimed runs first, so thread wake-up, clock ramp-up and first-touch page faults are not
    // measured as the cost of the first token counts.
    const auto warm_until = std::chrono::steady_clock::now() + std::chrono::milliseconds(300);
    while (std::chrono::steady_clock::now() < warm_until)
      Probe(16, shape.n_embd).run(pool, a.experts, arena, &next);
    // The fitting and the check runs are separate runs, taken in the same rounds.
    std::vector<Probe> probes;
    for (const auto* list : {&a.fit_tokens, &a.check_tokens}) {
      for (int32_t n : *list) probes.emplace_back(n, shape.n_embd);
    }
    time_interleaved(probes, pool, a.experts, a.reps, arena, &next);
    std::vector<sched::Sample> fit;
    for (size_t i = 0; i < a.fit_tokens.size(); ++i)
      fit.push_back({static_cast<double>(a.fit_tokens[i]), probes[i].median_us()});
    // Piecewise-linear through the fitting medians: the engine switches kernels at 16 tokens,
    // a step no three-parameter curve follows.
    cost.set_curve(sched::Device::Cpu, type_name_text, sched::ExpertCurve::interpolate(fit));
    const sched::ExpertCurve& curve = cost.curve(sched::Device::Cpu, type_name_text);
    for (size_t i = 0; i < a.check_tokens.size(); ++i) {
      const int32_t n = a.check_tokens[i];
      const double measured = probes[a.fit_tokens.size() + i].median_us();
      const double predicted = curve.predict(n);
      const double error = 100.0 * (predicted - measured) / measured;
      all_within = all_within && std::fabs(error) <= a.tolerance;
      std::printf("%-6s %7d %12.1f %12.1f %+7.1f%%\n", type_name_text.c_str(), n, measured,
                  predicted, error);
    }
    std::printf(
        "%-6s curve: through %zu measured points (best formula: %.1f us + max(%.1f us, "
        "%.2f us x tokens))\n",
        type_name_text.c_str(), curve.points.size(), curve.overhead_us, curve.fixed_us,
        curve.per_token_us);
  }
  std::printf("every check within %.0f%%: %s\n", a.tolerance, all_within ? "yes" : "no");
  if (!a.output.empty()) {
    std::ofstream out(a.output);
    out << cost.to_json().dump(2) << '\n';
    if (!out) throw std::runtime_error("cannot write cost model '" + a.output + "'");
    std::printf("cost model written to %s\n", a.output.c_str());
  }
  return all_within ? 0 : 3;
}

}  // namespace tandem
