// `tandem run` as a user runs it: generation on a gen-model model, the logit dump layout, a
// trace that loads as Chrome/Perfetto JSON, and clear errors for bad input.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>
#include <utility>

#include "cpu/cpu_features.h"
#include "engine/gguf_writer.h"
#include "tests/tiny_model_cli.h"

namespace tandem {
namespace {

class RunCli : public test::TinyModelCli {
 protected:
  static int run(const std::string& args, std::string* out, std::string* err) {
    return tandem("run " + args, out, err);
  }

  // Logit dump of three prompt tokens and three greedy steps on the tiny model, run with
  // `options`; `name` names the dump file.
  static nlohmann::json dump_logits(const std::string& options, const std::string& name) {
    std::string out, err;
    const std::string dump = path(name);
    const int rc = run("-m " + path("tiny.gguf") + " --prompt-tokens 12,7,99 -n 3 --temp 0 " +
                           options + " --dump-logits " + dump,
                       &out, &err);
    EXPECT_EQ(rc, 0) << err;
    std::ifstream in(dump);
    return rc == 0 ? nlohmann::json::parse(in) : nlohmann::json();
  }
};

TEST_F(RunCli, GeneratesTextAndReportsSpeed) {
  std::string out, err;
  ASSERT_EQ(run("-m " + path("tiny.gguf") + " -p 'Once upon a time' -n 8 --temp 0", &out, &err), 0)
      << err;
  EXPECT_EQ(out.rfind("Once upon a time", 0), 0u) << out;
  EXPECT_GT(out.size(), std::string("Once upon a time\n").size());
  EXPECT_NE(err.find("generation: 8 tokens"), std::string::npos) << err;
  EXPECT_NE(err.find("tokens/s"), std::string::npos) << err;
}

// Deferral is an approximation: the run still generates, with different logits.
TEST_F(RunCli, ExpertDeferralChangesLogitsButRuns) {
  const nlohmann::json plain = dump_logits("", "plain.json");
  const nlohmann::json deferred = dump_logits("--defer-experts 1", "deferred.json");
  ASSERT_FALSE(plain.is_null());
  ASSERT_FALSE(deferred.is_null());
  EXPECT_NE(plain["cases"][0]["prompt_logits"], deferred["cases"][0]["prompt_logits"]);
}

// A file read into memory has its Q8_0 matrices interleaved (cpu/interleave.h) and a mapped one
// (--mmap) does not: the 16-row kernels sum in another order than the row kernels, so logits
// agree to float rounding (1.8e-7 measured) and greedy tokens are the same. With an accelerator
// the CPU experts keep that layout and uploads rebuild the file's rows.
TEST_F(RunCli, CpuLayoutAgreesWithTheFileLayout) {
  for (const std::string accelerator : {"", "--gpu sim "}) {
    const nlohmann::json read = dump_logits(accelerator, "cpu_layout.json");
    const nlohmann::json mapped = dump_logits(accelerator + "--mmap", "file_layout.json");
    ASSERT_FALSE(read.is_null());
    ASSERT_FALSE(mapped.is_null());
    const auto &a = read["cases"][0], &b = mapped["cases"][0];
    if (cpu_features().has_avx512_kernels()) {
      EXPECT_NE(a, b) << accelerator << "interleaved rows sum in another order";
    }
    EXPECT_EQ(a["greedy"], b["greedy"]) << accelerator;
    double worst = 0;
    for (const char* key : {"prompt_logits", "decode_logits"}) {
      ASSERT_EQ(a[key].size(), b[key].size()) << key;
      for (size_t row = 0; row < a[key].size(); ++row) {
        ASSERT_EQ(a[key][row].size(), b[key][row].size()) << key << " row " << row;
        for (size_t i = 0; i < a[key][row].size(); ++i) {
          worst = std::max(worst,
                           std::fabs(a[key][row][i].get<double>() - b[key][row][i].get<double>()));
        }
      }
    }
    EXPECT_LT(worst, 1e-5) << accelerator;
  }
}

TEST_F(RunCli, DumpsLogitsInTheReferenceLayout) {
  std::string out, err;
  const std::string dump = path("dump.json");
  ASSERT_EQ(run("-m " + path("tiny.gguf") +
                    " --prompt-tokens 12,7,99 -n 3 --temp 0 --dump-logits " + dump,
                &out, &err),
            0)
      << err;
  std::ifstream in(dump);
  const auto j = nlohmann::json::parse(in);
  ASSERT_EQ(j["cases"].size(), 1u);
  const auto& c = j["cases"][0];
  EXPECT_EQ(c["prompt"], nlohmann::json({12, 7, 99}));
  EXPECT_EQ(c["prompt_logits"].size(), 3u);
  EXPECT_EQ(c["prompt_logits"][0].size(), 4096u);
  EXPECT_EQ(c["greedy"].size(), 3u);
  EXPECT_EQ(c["decode_logits"].size(), 3u);
  ASSERT_EQ(run("-m " + path("tiny.gguf") +
                    " --prompt-tokens 12,7,99 --force-tokens 5,6 --temp 0 --dump-logits " + dump,
                &out, &err),
            0)
      << err;
  std::ifstream in2(dump);
  EXPECT_EQ(nlohmann::json::parse(in2)["cases"][0]["greedy"], nlohmann::json({5, 6}));
}

TEST_F(RunCli, RecordedRoutingReplaysInTandemSim) {
  std::string out, err;
  const std::string routing = path("routing.jsonl");
  ASSERT_EQ(
      run("-m " + path("tiny.gguf") + " -p 'Hello there' -n 5 --temp 0 --record-routing " + routing,
          &out, &err),
      0)
      << err;
  std::ifstream in(routing);
  std::string line;
  std::getline(in, line);
  const auto header = nlohmann::json::parse(line);
  EXPECT_EQ(header["format"], "tandem-routing");
  const int n_layer = header["n_layer"].get<int>(), k = header["n_expert_used"].get<int>();
  int n_lines = 0, n_prefill = 0;
  while (std::getline(in, line)) {
    const auto j = nlohmann::json::parse(line);
    ++n_lines;
    n_prefill += j["phase"] == "prefill";
    ASSERT_EQ(j["experts"][0].size(), static_cast<size_t>(k));
  }
  // Every step has every layer: the prompt step, then one per fed decode token.
  EXPECT_EQ(n_lines % n_layer, 0);
  EXPECT_GE(n_lines, n_layer);
  EXPECT_LE(n_lines, 5 * n_layer);
  EXPECT_EQ(n_prefill, n_layer);
  const std::string sim = std::string(TANDEM_BINARY) + " sim --hardware " + TANDEM_SOURCE_DIR +
                          "/configs/hardware/rtx4090-ddr5-desktop.json -m " + path("tiny.gguf") +
                          " --routing " + routing + " -o json >" + path("sim.json") + " 2>&1";
  ASSERT_EQ(WEXITSTATUS(std::system(sim.c_str())), 0);
  std::ifstream sim_out(path("sim.json"));
  EXPECT_EQ(nlohmann::json::parse(sim_out)["policies"].size(), 5u);
}

TEST_F(RunCli, TraceOfTheSimAcceleratorIsValidChromeTrace) {
  std::string out, err;
  const std::string trace = path("trace.json");
  ASSERT_EQ(run("-m " + path("tiny.gguf") +
                    " -p 'Hello' -n 4 --temp 0 --gpu sim --expert-cache 0.001 --trace " + trace,
                &out, &err),
            0)
      << err;
  EXPECT_NE(err.find("accelerator: sim"), std::string::npos) << err;
  std::ifstream in(trace);
  const auto j = nlohmann::json::parse(in);  // throws (fails the test) on invalid JSON
  ASSERT_TRUE(j.contains("traceEvents"));
  int complete = 0;
  bool cpu_track = false, sim_track = false;
  for (const auto& e : j["traceEvents"]) {
    ASSERT_TRUE(e.contains("ph") && e.contains("pid") && e.contains("tid"));
    if (e["ph"] == "X") {
      ++complete;
      EXPECT_TRUE(e["ts"].is_number() && e["dur"].is_number());
    }
    if (e["ph"] == "M" && e.contains("args") && e["args"].contains("name")) {
      const std::string name = e["args"]["name"];
      cpu_track |= name == "cpu experts";
      sim_track |= name.find("sim") != std::string::npos;
    }
  }
  EXPECT_GT(complete, 10);
  EXPECT_TRUE(cpu_track) << "no CPU expert track";
  EXPECT_TRUE(sim_track) << "no sim accelerator track";
}

// A thread count above what the process may run at once is capped, with a note, and the
// results do not depend on it.
TEST_F(RunCli, MoreThreadsThanTheProcessMayRunAreCappedWithANote) {
  std::string out_many, err_many, out_one, err_one;
  const std::string args = "-m " + path("tiny.gguf") + " --prompt-tokens 12,7,99 -n 6 --temp 0 ";
  ASSERT_EQ(run(args + "-t 4096", &out_many, &err_many), 0) << err_many;
  ASSERT_EQ(run(args + "-t 1", &out_one, &err_one), 0) << err_one;
  EXPECT_NE(err_many.find("4096 CPU threads asked for, but this process may run"),
            std::string::npos)
      << err_many;
  EXPECT_EQ(err_one.find("CPU threads asked for"), std::string::npos) << err_one;
  EXPECT_EQ(out_many, out_one);
}

TEST_F(RunCli, BadInputGetsAClearError) {
  std::string out, err;
  EXPECT_EQ(run("-m " + path("tiny.gguf") + " -p hi --bogus", &out, &err), 2);
  EXPECT_NE(err.find("unknown option '--bogus'"), std::string::npos) << err;
  EXPECT_EQ(run("-m " + path("tiny.gguf") + " -p hi --gpu sim --policy fastest", &out, &err), 2);
  EXPECT_NE(err.find("unknown policy 'fastest'"), std::string::npos) << err;
  EXPECT_EQ(run("-m " + path("tiny.gguf") + " -p hi -n -3", &out, &err), 2);
  EXPECT_NE(err.find("-n"), std::string::npos) << err;
  EXPECT_EQ(run("-p hi", &out, &err), 2);
  EXPECT_NE(err.find("no model given"), std::string::npos) << err;
  EXPECT_EQ(run("-m " + path("tiny.gguf") + " -p hi --gpu tpu", &out, &err), 2);
  EXPECT_NE(err.find("'tpu'"), std::string::npos) << err;
  EXPECT_NE(run("-m " + path("tiny.gguf") + " -p hi --defer-experts 64", &out, &err), 0);
  EXPECT_NE(err.find("--defer-experts"), std::string::npos) << err;
  EXPECT_NE(err.find("experts per token"), std::string::npos) << err;
  EXPECT_EQ(run("-m " + path("tiny.gguf") + " -p hi --gpu sim --eviction mru", &out, &err), 2);
  EXPECT_NE(err.find("unknown cache eviction 'mru'"), std::string::npos) << err;
  EXPECT_NE(run("-m " + path("tiny.gguf") + " -p hi --gpu sim --pin-layers 0,9", &out, &err), 0);
  EXPECT_NE(err.find("layer 9 is outside the model's"), std::string::npos) << err;
  EXPECT_NE(run("-m " + path("tiny.gguf") + " -p hi --gpu sim --expert-cache 0.0001 --pin-layers 0",
                &out, &err),
            0);
  EXPECT_NE(err.find("pinned layers need"), std::string::npos) << err;
  EXPECT_NE(run("-m " + path("missing.gguf") + " -p hi", &out, &err), 0);
  EXPECT_NE(err.find("missing.gguf"), std::string::npos) << err;
  EXPECT_NE(run("-m " + path("tiny.gguf") + " -p hi -n 5000 -c 64", &out, &err), 0);
  EXPECT_NE(err.find("exceeds the context"), std::string::npos) << err;

  GgufWriter w;  // a GGUF of an architecture Tandem does not serve
  w.add_string("general.architecture", "bert");
  w.begin(path("bert.gguf"));
  w.finish();
  EXPECT_NE(run("-m " + path("bert.gguf") + " -p hi", &out, &err), 0);
  EXPECT_NE(err.find("unsupported architecture 'bert'"), std::string::npos) << err;
}

}  // namespace
}  // namespace tandem
