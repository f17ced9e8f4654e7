// `tandem bench`: llama-bench style throughput of prompt processing (ppN: N tokens in one
// batch) and generation (tgN: N tokens one at a time from an empty context).
#include <sys/resource.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <nlohmann/json.hpp>
#include <random>
#include <string>

#include "cpu/arena.h"
#include "cpu/memory_bandwidth.h"
#include "engine/decode_weight_reads.h"
#include "engine/engine.h"
#include "engine/expert_executor.h"
#include "engine/model.h"
#include "server/accelerator_options.h"
#include "server/cli_args.h"
#include "server/commands.h"

namespace tandem {
namespace {

constexpr const char* kHelp = R"(usage: tandem bench -m MODEL [options]

  -m, --model FILE     GGUF model
  -p, --n-prompt LIST  prompt lengths to test, comma-separated (default 512; 0 skips)
  -n, --n-gen LIST     generation lengths to test (default 128; 0 skips)
  -d, --n-depth LIST   context depths: each run first fills the context with this many tokens
                       (not timed), then times its test on top, as llama-bench -d (default 0)
  -t, --threads LIST   thread counts (default: all physical cores; at most the CPUs this
                       process may use)
  -r, --repetitions N  repetitions per test (default 5)
  -o, --output md|json table (default) or llama-bench's JSON keys
  --kv-type f32|f16    KV cache element type (default f32)
  --mmap               map the GGUF file instead of reading it into (huge-page) memory:
                       faster start, slower decode (Q4_K, Q8_0 also stay in the file's layout)
  --roofline           also print weight bytes read per token, achieved GB/s and the fraction
                       of this machine's read bandwidth, measured here with all threads for
                       each generation test: a 1 GiB streaming read right before and right
                       after it, and a plain read of the weights decode steps read (random
                       experts) after it; the highest of the three counts
%sTokens are random ids; a warm-up run precedes each test.
)";

constexpr uint64_t kProbeBytes = uint64_t{1} << 30;  // far larger than last-level caches

struct BenchOptions {
  std::string model_path;
  std::vector<int32_t> n_prompt = {512}, n_gen = {128}, n_depth = {0}, threads = {0};
  int32_t reps = 5;
  bool json = false, roofline = false;
  GgufMemory weights = GgufMemory::Read;
  KvType kv = KvType::F32;
  AcceleratorSetup accel;
};

BenchOptions parse(const Args& args) {
  BenchOptions o;
  ArgReader r(args);
  while (!r.done()) {
    const std::string a = r.next();
    if (a == "-m" || a == "--model") o.model_path = r.value(a);
    else if (a == "-p" || a == "--n-prompt") o.n_prompt = parse_int_list(a, r.value(a));
    else if (a == "-n" || a == "--n-gen") o.n_gen = parse_int_list(a, r.value(a));
    else if (a == "-d" || a == "--n-depth")
      o.n_depth = parse_int_list(a, r.value(a));
    else if (a == "-t" || a == "--threads") o.threads = parse_int_list(a, r.value(a));
    else if (a == "-r" || a == "--repetitions") o.reps = static_cast<int32_t>(r.int_value(a, 1, 1000));
    else if (a == "-o" || a == "--output") {
      const std::string v = r.value(a);
      if (v != "md" && v != "json") throw UsageError("option -o: '" + v + "' is not md or json");
      o.json = v == "json";
    } else if (a == "--kv-type") {
      const std::string v = r.value(a);
      if (v != "f32" && v != "f16") throw UsageError("option --kv-type: '" + v + "' is not f32 or f16");
      o.kv = v == "f16" ? KvType::F16 : KvType::F32;
    } else if (a == "--roofline") o.roofline = true;
    else if (a == "--mmap") o.weights = GgufMemory::Map;
    else if (o.accel.parse_option(a, r)) continue;
    else throw UsageError("unknown option '" + a + "' (see tandem bench --help)");
  }
  if (o.model_path.empty()) throw UsageError("no model given (-m FILE)");
  return o;
}

struct Stats {
  double avg_ts = 0, stddev_ts = 0, avg_ns = 0, stddev_ns = 0;
  std::vector<double> samples_ts, samples_ns;
};

Stats summarize(const std::vector<double>& seconds, int32_t n_tokens) {
  Stats s;
  for (double sec : seconds) {
    s.samples_ns.push_back(sec * 1e9);
    s.samples_ts.push_back(n_tokens / sec);
  }
  auto mean_sd = [](const std::vector<double>& v, double& mean, double& sd) {
    mean = 0;
    for (double x : v) mean += x;
    mean /= v.size();
    double var = 0;
    for (double x : v) var += (x - mean) * (x - mean);
    sd = v.size() > 1 ? std::sqrt(var / (v.size() - 1)) : 0.0;
  };
  mean_sd(s.samples_ts, s.avg_ts, s.stddev_ts);
  mean_sd(s.samples_ns, s.avg_ns, s.stddev_ns);
  return s;
}

using Clock = std::chrono::steady_clock;

// Seconds for one run: a prompt of n_prompt tokens in one batch, or n_gen single-token steps,
// after `depth` tokens already in the context (filled first, in one batch, not timed).
double time_run(Engine& engine, int32_t depth, int32_t n_prompt, int32_t n_gen, std::mt19937& rng) {
  std::uniform_int_distribution<int32_t> token(0, engine.n_vocab() - 1);
  std::vector<float> logits;
  engine.clear_sequence(0);
  auto prompt = [&](int32_t first, int32_t n) {
    std::vector<BatchEntry> batch;
    for (int32_t i = 0; i < n; ++i) batch.push_back({token(rng), first + i, 0, i + 1 == n});
    engine.forward(batch, logits);
  };
  if (depth > 0) prompt(0, depth);
  const auto t0 = Clock::now();
  if (n_prompt > 0) prompt(depth, n_prompt);
  for (int32_t i = 0; i < n_gen; ++i) {
    const BatchEntry e{token(rng), depth + i, 0, true};
    engine.forward(std::span(&e, 1), logits);
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double peak_rss_gib() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return u.ru_maxrss / 1048576.0;  // KiB -> GiB
}

}  // namespace

int cmd_bench(const Args& args) {
  for (const std::string& a : args) {
    if (a == "-h" || a == "--help") {
      std::printf(kHelp, AcceleratorSetup::kHelp);
      return 0;
    }
  }
  BenchOptions o;
  try {
    o = parse(args);
  } catch (const UsageError& e) {
    std::fprintf(stderr, "tandem bench: %s\n", e.what());
    return 2;
  }
  const auto model = Model::load(o.model_path, o.weights, WeightLayout::Cpu);
  const ModelSpec& spec = model->spec();
  const double size_gib = model->file().file_size() / 1073741824.0;
  const double gb_per_token = model->bytes_per_token() / 1e9;
  nlohmann::json rows = nlohmann::json::array();
  std::vector<std::string> roofline_notes;  // printed under the table
  if (!o.json) {
    std::printf("| model | size | threads | test | t/s |%s\n",
                o.roofline ? " GB/s | roofline |" : "");
    std::printf("| --- | ---: | ---: | ---: | ---: |%s\n", o.roofline ? " ---: | ---: |" : "");
  }
  EngineOptions accel_options;
  o.accel.apply(accel_options, *model);
  for (int32_t threads : o.threads) {
    EngineOptions eo = accel_options;
    eo.n_threads = threads;
    eo.kv_type = o.kv;
    int32_t longest = 1;
    for (int32_t p : o.n_prompt) longest = std::max(longest, p);
    for (int32_t n : o.n_gen) longest = std::max(longest, n);
    int32_t deepest = 0;
    for (int32_t d : o.n_depth) deepest = std::max(deepest, d);
    eo.n_ctx = deepest + longest;
    Engine engine(*model, eo);
    CpuArena arena(usable_thread_count(threads));  // the engine's count, for the table
    // The bandwidth is measured right before and right after each generation test and the
    // higher figure judges it: this machine's bandwidth can drift by 2x within minutes.
    std::unique_ptr<ReadBandwidthProbe> probe;
    if (o.roofline) probe = std::make_unique<ReadBandwidthProbe>(&arena, kProbeBytes);
    std::mt19937 rng(1234);
    auto run_test = [&](int32_t depth, int32_t n_prompt, int32_t n_gen) {
      const int32_t n_tokens = n_prompt + n_gen;
      time_run(engine, 0, std::min(n_prompt, 16), std::min(n_gen, 4), rng);  // warm-up
      const bool judge = probe && n_gen > 0;
      double streaming = judge ? probe->measure() : 0.0;
      std::vector<double> seconds;
      for (int32_t r = 0; r < o.reps; ++r)
        seconds.push_back(time_run(engine, depth, n_prompt, n_gen, rng));
      double weight_reads = 0.0;
      if (judge) {
        streaming = std::max(streaming, probe->measure());
        weight_reads = measure_decode_weight_reads(*model, &arena);
      }
      const double bandwidth = std::max(streaming, weight_reads);
      const Stats s = summarize(seconds, n_tokens);
      std::string test =
          n_prompt > 0 ? "pp" + std::to_string(n_prompt) : "tg" + std::to_string(n_gen);
      if (depth > 0) test += " @ d" + std::to_string(depth);
      const double gbs = n_gen > 0 ? s.avg_ts * gb_per_token : 0.0;
      if (o.json) {
        rows.push_back({{"model_filename", o.model_path},
                        {"model_type", spec.arch},
                        {"model_size", model->file().file_size()},
                        {"n_threads", arena.n_threads()},
                        {"n_prompt", n_prompt},
                        {"n_gen", n_gen},
                        {"n_depth", depth},
                        {"avg_ns", s.avg_ns},
                        {"stddev_ns", s.stddev_ns},
                        {"avg_ts", s.avg_ts},
                        {"stddev_ts", s.stddev_ts},
                        {"samples_ns", s.samples_ns},
                        {"samples_ts", s.samples_ts},
                        {"type_k", o.kv == KvType::F16 ? "f16" : "f32"}});
        if (o.roofline && n_gen > 0) {
          rows.back()["bytes_per_token"] = model->bytes_per_token();
          rows.back()["achieved_gbps"] = gbs;
          rows.back()["measured_bandwidth_gbps"] = bandwidth;
          rows.back()["streaming_read_gbps"] = streaming;
          rows.back()["weight_read_gbps"] = weight_reads;
        }
      } else {
        std::printf("| %s | %.2f GiB | %d | %s | %.2f ± %.2f |", spec.arch.c_str(), size_gib,
                    arena.n_threads(), test.c_str(), s.avg_ts, s.stddev_ts);
        if (o.roofline && n_gen > 0)
          std::printf(" %.1f | %.0f%% of %.1f GB/s |", gbs, 100 * gbs / bandwidth, bandwidth);
        else if (o.roofline)
          std::printf(" | |");
        std::printf("\n");
        std::fflush(stdout);
        if (o.roofline && n_gen > 0) {
          char note[160];
          std::snprintf(note, sizeof note,
                        "%s at -t %d: streaming read %.1f GB/s, plain read of decode's "
                        "weights %.1f GB/s",
                        test.c_str(), arena.n_threads(), streaming, weight_reads);
          roofline_notes.emplace_back(note);
        }
      }
    };
    for (int32_t d : o.n_depth) {
      for (int32_t p : o.n_prompt)
        if (p > 0) run_test(d, p, 0);
      for (int32_t n : o.n_gen)
        if (n > 0) run_test(d, 0, n);
    }
    if (eo.accelerator && !o.json) {
      const ExpertRunStats& st = engine.expert_stats();
      const double runs = static_cast<double>(st.cpu_experts + st.gpu_experts);
      std::printf("experts (%d threads, warm-ups included): %llu on the CPU, %llu on the accelerator "
                  "(%.1f%% cache hits), %llu copied (%.1f MB)\n",
                  arena.n_threads(), static_cast<unsigned long long>(st.cpu_experts),
                  static_cast<unsigned long long>(st.gpu_experts),
                  runs > 0 ? 100.0 * static_cast<double>(st.cache_hits) / runs : 0.0,
                  static_cast<unsigned long long>(st.copied_experts),
                  static_cast<double>(st.copied_bytes) / 1e6);
      if (engine.weights_page_locked()) {
        std::printf("weights page-locked for DMA in %.2f s (expert copies need no host staging)\n",
                    engine.page_lock_seconds());
      }
      std::printf(
          "expert time: %.3f s on the CPU (host clock), %.3f s on the accelerator "
          "(device clock; timed by the scheduled policies)\n",
          st.cpu_expert_seconds, st.gpu_expert_seconds);
      if (st.cost_observations > 0) {
        std::printf("cost model: CPU expert times predicted within %.1f%% (moving average of the "
                    "relative error; %llu runs observed, curve refit online)\n",
                    100.0 * st.cpu_cost_error,
                    static_cast<unsigned long long>(st.cost_observations));
      }
      if (st.gpu_cost_observations + st.copy_cost_observations > 0) {
        std::printf(
            "cost model: accelerator expert times within %.1f%% (%llu runs), copy times "
            "within %.1f%% (%llu copies), timed on the device and refit online\n",
            100.0 * st.gpu_cost_error, static_cast<unsigned long long>(st.gpu_cost_observations),
            100.0 * st.copy_cost_error, static_cast<unsigned long long>(st.copy_cost_observations));
      }
      if (st.predicted_experts > 0) {
        std::printf("prefetch: %llu experts copied ahead, %llu of them used; the next layer's "
                    "prediction named %.1f%% of its activated experts\n",
                    static_cast<unsigned long long>(st.prefetched_experts),
                    static_cast<unsigned long long>(st.prefetch_hits),
                    100.0 * static_cast<double>(st.predicted_correct) /
                        static_cast<double>(st.predicted_experts));
      }
      if (st.predicted_wrong > 0) {
        const double wrong = static_cast<double>(st.predicted_wrong);
        std::printf(
            "prefetch: %llu predicted experts went unused; %.1f%% of them were cached "
            "anyway (uniformly random guesses: %.1f%%)\n",
            static_cast<unsigned long long>(st.predicted_wrong),
            100.0 * static_cast<double>(st.predicted_wrong_cached) / wrong,
            100.0 * st.predicted_wrong_cached_if_uniform / wrong);
      }
    }
  }
  o.accel.finish();
  if (o.json) {
    std::printf("%s\n", rows.dump(2).c_str());
  } else {
    std::printf("\nweights read per generated token: %.3f GB; peak RSS %.2f GiB%s\n", gb_per_token,
                peak_rss_gib(), o.roofline ? " (with the 1 GiB bandwidth probe)" : "");
    if (!roofline_notes.empty()) {
      std::printf("read bandwidth measured (the roofline is the higher figure):\n");
      for (const std::string& note : roofline_notes) std::printf("  %s\n", note.c_str());
    }
  }
  return 0;
}

}  // namespace tandem
