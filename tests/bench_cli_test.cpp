// `tandem bench` as a user runs it on a tiny gen-model model: llama-bench's JSON keys, context
// depths (-d, as llama-bench -d), the roofline's figures, and clear errors for bad options.
#include <gtest/gtest.h>

#include <algorithm>
#include <nlohmann/json.hpp>
#include <utility>

#include "tests/tiny_model_cli.h"

namespace tandem {
namespace {

class BenchCli : public test::TinyModelCli {
 protected:
  static int bench(const std::string& args, std::string* out, std::string* err) {
    return tandem("bench " + args, out, err);
  }
};

TEST_F(BenchCli, JsonRowsPerDepthWithLlamaBenchKeys) {
  std::string out, err;
  ASSERT_EQ(bench("-m " + model() + " -p 8 -n 4 -d 0,20 -r 2 -t 1 -o json", &out, &err), 0) << err;
  const nlohmann::json rows = nlohmann::json::parse(out);
  ASSERT_EQ(rows.size(), 4u) << out;  // pp8 and tg4, at depth 0 and at depth 20
  const int expect[4][3] = {{0, 8, 0}, {0, 0, 4}, {20, 8, 0}, {20, 0, 4}};
  for (size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE(rows[i].dump());
    EXPECT_EQ(rows[i]["n_depth"], expect[i][0]);
    EXPECT_EQ(rows[i]["n_prompt"], expect[i][1]);
    EXPECT_EQ(rows[i]["n_gen"], expect[i][2]);
    EXPECT_EQ(rows[i]["n_threads"], 1);
    EXPECT_GT(rows[i]["avg_ts"].get<double>(), 0.0);
    EXPECT_EQ(rows[i]["samples_ts"].size(), 2u);
  }
}

TEST_F(BenchCli, TableNamesTheDepth) {
  std::string out, err;
  ASSERT_EQ(bench("-m " + model() + " -p 0 -n 3 -d 0,16 -r 1 -t 1", &out, &err), 0) << err;
  EXPECT_NE(out.find("| tg3 |"), std::string::npos) << out;
  EXPECT_NE(out.find("| tg3 @ d16 |"), std::string::npos) << out;
}

TEST_F(BenchCli, RooflineJudgesByTheHigherOfTwoMeasuredReads) {
  std::string out, err;
  ASSERT_EQ(bench("-m " + model() + " -p 0 -n 4 -r 1 -t 1 --roofline -o json", &out, &err), 0)
      << err;
  const nlohmann::json rows = nlohmann::json::parse(out);
  ASSERT_EQ(rows.size(), 1u) << out;
  const nlohmann::json& row = rows[0];
  const double streaming = row["streaming_read_gbps"], weights = row["weight_read_gbps"];
  EXPECT_GT(streaming, 0.0) << row.dump();
  EXPECT_GT(weights, 0.0) << row.dump();
  EXPECT_EQ(row["measured_bandwidth_gbps"].get<double>(), std::max(streaming, weights));
  EXPECT_NEAR(row["achieved_gbps"].get<double>(),
              row["avg_ts"].get<double>() * row["bytes_per_token"].get<double>() / 1e9, 1e-6);

  ASSERT_EQ(bench("-m " + model() + " -p 0 -n 4 -r 1 -t 1 --roofline", &out, &err), 0) << err;
  EXPECT_NE(out.find("tg4 at -t 1: streaming read "), std::string::npos) << out;
  EXPECT_NE(out.find("plain read of decode's weights "), std::string::npos) << out;
}

TEST_F(BenchCli, BadOptionsNameTheProblem) {
  std::string out, err;
  EXPECT_EQ(bench("-m " + model() + " -d 4,x", &out, &err), 2);
  EXPECT_NE(err.find("-d"), std::string::npos) << err;
  EXPECT_NE(err.find("'x'"), std::string::npos) << err;
  EXPECT_EQ(bench("-m " + model() + " -n -3", &out, &err), 2);
  EXPECT_NE(err.find("'-3'"), std::string::npos) << err;
  EXPECT_EQ(bench("-p 8", &out, &err), 2);
  EXPECT_NE(err.find("no model"), std::string::npos) << err;
}

}  // namespace
}  // namespace tandem
