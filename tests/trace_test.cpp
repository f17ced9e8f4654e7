// TraceRecorder: thread-safe span collection and the Chrome trace / Perfetto JSON it writes.
#include "engine/trace.h"

#include <gtest/gtest.h>

#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include <nlohmann/json.hpp>

namespace tandem {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  std::stringstream text;
  text << in.rdbuf();
  return nlohmann::json::parse(text.str());  // throws on malformed JSON
}

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / (name + "-" + std::to_string(::getpid())))
      .string();
}

TEST(Trace, ConcurrentSpansAreAllKept) {
  TraceRecorder rec;
  const int n_threads = 4, n_each = 500;
  std::vector<std::thread> threads;
  for (int i = 0; i < n_threads; ++i) {
    threads.emplace_back([&rec, i] {
      for (int j = 0; j < n_each; ++j) {
        rec.add(TraceSpan{"op " + std::to_string(j),
                          "test",
                          "track " + std::to_string(i),
                          static_cast<double>(j),
                          1.0,
                          {}});
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(rec.size(), static_cast<size_t>(n_threads * n_each));
}

TEST(Trace, WritesChromeTraceWithRequiredFields) {
  TraceRecorder rec;
  rec.add(
      TraceSpan{"expert 3", "moe", "cpu experts", 10.0, 25.5, {{"tokens", "9"}, {"type", "q4_k"}}});
  rec.add(TraceSpan{"matmul", "sim", "sim gpu compute", 0.0, 7.0, {}, "sim (virtual clock)"});
  rec.add(TraceSpan{"copy", "sim", "sim pcie copy", 3.0, 4.0, {}, "sim (virtual clock)"});
  rec.add(TraceSpan{"expert 4", "moe", "cpu experts", 40.0, 5.0, {}});
  {
    ScopedSpan s(&rec, "layer 0", "layer", "engine");
    s.arg("layer", "0");
  }
  const std::string path = temp_path("tandem-trace-test.json");
  rec.write_chrome_trace(path);
  const nlohmann::json doc = read_json(path);
  std::filesystem::remove(path);

  ASSERT_TRUE(doc.contains("traceEvents"));
  ASSERT_TRUE(doc["traceEvents"].is_array());
  EXPECT_EQ(doc["displayTimeUnit"], "ms");

  std::map<std::pair<int, int>, std::string> thread_names;
  std::map<int, std::string> process_names;
  int n_complete = 0;
  for (const auto& e : doc["traceEvents"]) {
    ASSERT_TRUE(e.contains("ph"));
    if (e["ph"] == "M") {
      if (e["name"] == "thread_name") thread_names[{e["pid"], e["tid"]}] = e["args"]["name"];
      if (e["name"] == "process_name") process_names[e["pid"]] = e["args"]["name"];
      continue;
    }
    ASSERT_EQ(e["ph"], "X");
    ++n_complete;
    for (const char* key : {"name", "cat", "ts", "dur", "pid", "tid", "args"}) {
      EXPECT_TRUE(e.contains(key)) << "event lacks " << key << ": " << e.dump();
    }
    EXPECT_TRUE(e["ts"].is_number());
    EXPECT_TRUE(e["dur"].is_number());
    EXPECT_GE(e["dur"].get<double>(), 0.0);
    // Every span's row is named by a thread_name event (emitted before its first span).
    EXPECT_TRUE(thread_names.count({e["pid"], e["tid"]})) << e.dump();
  }
  EXPECT_EQ(n_complete, 5);

  std::set<std::string> tracks;
  for (const auto& [ids, name] : thread_names) tracks.insert(name);
  EXPECT_EQ(tracks,
            (std::set<std::string>{"cpu experts", "sim gpu compute", "sim pcie copy", "engine"}));
  std::set<std::string> processes;
  for (const auto& [pid, name] : process_names) processes.insert(name);
  EXPECT_EQ(processes, (std::set<std::string>{"tandem", "sim (virtual clock)"}));

  // The first span keeps its values; numeric args stay numbers, the rest strings.
  const auto& first = *std::find_if(doc["traceEvents"].begin(), doc["traceEvents"].end(),
                                    [](const nlohmann::json& e) { return e["ph"] == "X"; });
  EXPECT_EQ(first["name"], "expert 3");
  EXPECT_EQ(first["cat"], "moe");
  EXPECT_DOUBLE_EQ(first["ts"].get<double>(), 10.0);
  EXPECT_DOUBLE_EQ(first["dur"].get<double>(), 25.5);
  EXPECT_TRUE(first["args"]["tokens"].is_number());
  EXPECT_EQ(first["args"]["tokens"].get<double>(), 9.0);
  EXPECT_EQ(first["args"]["type"], "q4_k");
}

TEST(Trace, ScopedSpanMeasuresWallClockAndNullRecorderIsNoOp) {
  TraceRecorder rec;
  const double before = rec.now_us();
  {
    ScopedSpan s(&rec, "work", "cpu", "cpu experts");
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  ScopedSpan none(nullptr, "ignored", "cpu", "cpu experts");
  none.arg("k", "v");
  none.finish();
  const auto spans = rec.spans();
  ASSERT_EQ(spans.size(), 1u);
  EXPECT_GE(spans[0].start_us, before);
  EXPECT_GT(spans[0].dur_us, 0.0);
  EXPECT_LE(spans[0].start_us + spans[0].dur_us, rec.now_us());
}

TEST(Trace, EmptyRecorderWritesValidDocument) {
  TraceRecorder rec;
  const nlohmann::json doc = nlohmann::json::parse(rec.chrome_trace_json());
  EXPECT_TRUE(doc["traceEvents"].is_array());
  EXPECT_TRUE(doc["traceEvents"].empty());
}

TEST(Trace, UnwritablePathThrowsNamingIt) {
  TraceRecorder rec;
  const std::string path = "/nonexistent-dir-for-tandem/trace.json";
  try {
    rec.write_chrome_trace(path);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
}

}  // namespace
}  // namespace tandem
