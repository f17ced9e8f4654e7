// `tandem serve` end to end: a child process on a loopback port with a tiny generated model,
// driven with httplib::Client, raw sockets and curl.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <httplib.h>
#include <netinet/in.h>
#include <sys/socket.h>

#include <future>
#include <nlohmann/json.hpp>

#include "tests/server_test_support.h"

namespace tandem {
namespace {

using nlohmann::json;
using namespace std::chrono_literals;

constexpr const char* kKey = "test-key-123";

const char* kConfig = R"({
  "model": {"chat_template": "chatml"},
  "server": {"api_key": "test-key-123", "max_parallel": 8, "queue_limit": 8, "body_limit_bytes": 65536,
             "default_max_tokens": 16, "log_requests": false, "prefill_chunk": 32},
  "context_size": 256, "threads": 2})";

class ServerHttpTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (test::tiny_model_path().empty()) return;
    server_ = new test::ServeProcess(kConfig, {"-m", test::tiny_model_path()});
    port_ = server_->wait_until_healthy(180s);
  }
  static void TearDownTestSuite() {
    delete server_;
    server_ = nullptr;
  }
  void SetUp() override {
    TANDEM_REQUIRE_TINY_MODEL();
    ASSERT_NE(port_, 0) << "server did not start:\n" << (server_ ? server_->log() : "");
  }

  static httplib::Client client() {
    httplib::Client c("127.0.0.1", port_);
    c.set_read_timeout(60, 0);
    c.set_bearer_token_auth(kKey);
    return c;
  }
  static httplib::Result post(const std::string& path, const json& body) {
    return client().Post(path.c_str(), body.dump(), "application/json");
  }
  static json post_ok(const std::string& path, const json& body) {
    auto r = post(path, body);
    EXPECT_TRUE(r) << "no response";
    if (!r) return {};
    EXPECT_EQ(r->status, 200) << r->body;
    return json::parse(r->body);
  }
  // The data: payloads of an SSE body, "[DONE]" included as a string.
  static std::vector<json> sse_events(const std::string& body) {
    std::vector<json> out;
    std::istringstream in(body);
    std::string line;
    while (std::getline(in, line)) {
      if (line.rfind("data: ", 0) != 0) continue;
      const std::string payload = line.substr(6);
      out.push_back(payload == "[DONE]" ? json("[DONE]") : json::parse(payload));
    }
    return out;
  }
  static json greedy_completion(const std::string& prompt, int max_tokens) {
    return {
        {"prompt", prompt}, {"max_tokens", max_tokens}, {"temperature", 0}, {"ignore_eos", true}};
  }

  static test::ServeProcess* server_;
  static int port_;
};

test::ServeProcess* ServerHttpTest::server_ = nullptr;
int ServerHttpTest::port_ = 0;

TEST_F(ServerHttpTest, HealthModelsAndMetrics) {
  httplib::Client open("127.0.0.1", port_);
  auto h = open.Get("/health");  // no key needed
  ASSERT_TRUE(h);
  EXPECT_EQ(h->status, 200);
  auto m = client().Get("/v1/models");
  ASSERT_TRUE(m);
  EXPECT_EQ(json::parse(m->body)["data"][0]["id"], "tiny-qwen3moe-q8_0.gguf");
  auto metrics = client().Get("/metrics");
  ASSERT_TRUE(metrics);
  EXPECT_NE(metrics->body.find("tandem_queue_depth"), std::string::npos);
  EXPECT_NE(metrics->body.find("tandem_kv_cache_usage_ratio"), std::string::npos);
  EXPECT_NE(metrics->body.find("tandem_predicted_tokens_per_second"), std::string::npos);
  EXPECT_NE(metrics->body.find("tandem_expert_prediction_accuracy"), std::string::npos);
  EXPECT_NE(metrics->body.find("tandem_cost_model_cpu_error_ratio"), std::string::npos);
  EXPECT_NE(metrics->body.find("tandem_expert_seconds_total{device=\"cpu\"}"), std::string::npos);
  EXPECT_NE(metrics->body.find("tandem_expert_prediction_wrong_total"), std::string::npos);
}

TEST_F(ServerHttpTest, CompletionUsageTimingsAndStreamAgree) {
  const json r = post_ok("/v1/completions", greedy_completion("Once upon a time", 12));
  EXPECT_EQ(r["object"], "text_completion");
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["completion_tokens"], 12);
  EXPECT_GT(r["usage"]["prompt_tokens"].get<int>(), 1);
  EXPECT_EQ(r["usage"]["total_tokens"], r["usage"]["prompt_tokens"].get<int>() + 12);
  EXPECT_GT(r["timings"]["predicted_per_second"].get<double>(), 0);
  EXPECT_GT(r["timings"]["prompt_per_second"].get<double>(), 0);

  json body = greedy_completion("Once upon a time", 12);
  body["stream"] = true;
  body["stream_options"] = {{"include_usage", true}};
  auto s = post("/v1/completions", body);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->get_header_value("Content-Type"), "text/event-stream");
  const auto events = sse_events(s->body);
  ASSERT_GE(events.size(), 3u);
  EXPECT_EQ(events.back(), "[DONE]");
  const json& usage = events[events.size() - 2];
  EXPECT_EQ(usage["usage"], r["usage"]);
  std::string text;
  for (size_t i = 0; i + 2 < events.size(); ++i)
    text += events[i]["choices"][0]["text"].get<std::string>();
  EXPECT_EQ(text, r["choices"][0]["text"]);
  EXPECT_EQ(events[events.size() - 3]["choices"][0]["finish_reason"], "length");
}

TEST_F(ServerHttpTest, ChatStreamingAndNot) {
  const json msgs = json::array(
      {{{"role", "system"}, {"content", "Be brief."}}, {{"role", "user"}, {"content", "Hi"}}});
  const json body = {
      {"messages", msgs}, {"max_tokens", 10}, {"temperature", 0}, {"ignore_eos", true}};
  const json r = post_ok("/v1/chat/completions", body);
  EXPECT_EQ(r["object"], "chat.completion");
  EXPECT_EQ(r["choices"][0]["message"]["role"], "assistant");
  EXPECT_EQ(r["usage"]["completion_tokens"].get<int>() <= 10, true);
  json sbody = body;
  sbody["stream"] = true;
  auto s = post("/v1/chat/completions", sbody);
  ASSERT_TRUE(s);
  const auto events = sse_events(s->body);
  ASSERT_GE(events.size(), 2u);
  EXPECT_EQ(events[0]["object"], "chat.completion.chunk");
  EXPECT_EQ(events[0]["choices"][0]["delta"]["role"], "assistant");
  std::string text;
  for (const json& e : events) {
    if (e.is_object() && e["choices"][0]["delta"].contains("content")) {
      text += e["choices"][0]["delta"]["content"].get<std::string>();
    }
  }
  EXPECT_EQ(text, r["choices"][0]["message"]["content"]);
  EXPECT_EQ(events.back(), "[DONE]");
}

TEST_F(ServerHttpTest, StopStringsAndSeeds) {
  const std::string full = post_ok(
      "/v1/completions", greedy_completion("The capital of France is", 24))["choices"][0]["text"];
  ASSERT_GE(full.size(), 6u);
  const std::string stop = full.substr(full.size() / 2, 2);
  json body = greedy_completion("The capital of France is", 24);
  body["stop"] = json::array({"\x01\x02", stop});
  const json r = post_ok("/v1/completions", body);
  EXPECT_EQ(r["choices"][0]["text"], full.substr(0, full.find(stop)));
  EXPECT_EQ(r["choices"][0]["finish_reason"], "stop");

  const json seeded = {{"prompt", "Hello"},
                       {"max_tokens", 16},
                       {"temperature", 1.0},
                       {"seed", 1234},
                       {"ignore_eos", true}};
  EXPECT_EQ(post_ok("/v1/completions", seeded)["choices"][0]["text"],
            post_ok("/v1/completions", seeded)["choices"][0]["text"]);
}

TEST_F(ServerHttpTest, EightConcurrentGreedyStreamsMatchSoloRuns) {
  const char* prompts[8] = {"Once upon a time",         "The capital of France is",
                            "In a hole in the ground",  "1 2 3 4 5",
                            "It was the best of times", "Call me Ishmael.",
                            "To be or not to be",       "A"};
  auto stream_text = [](const std::string& prompt) {
    json body = greedy_completion(prompt, 20);
    body["stream"] = true;
    auto r = post("/v1/completions", body);
    std::string text;
    if (!r || r->status != 200) return std::string("<failed>");
    for (const json& e : sse_events(r->body)) {
      if (e.is_object() && e.contains("choices") && !e["choices"].empty()) {
        text += e["choices"][0]["text"].get<std::string>();
      }
    }
    return text;
  };
  std::vector<std::string> solo;
  for (const char* p : prompts) solo.push_back(stream_text(p));
  std::vector<std::future<std::string>> together;
  for (const char* p : prompts)
    together.push_back(std::async(std::launch::async, stream_text, std::string(p)));
  for (size_t i = 0; i < 8; ++i) EXPECT_EQ(together[i].get(), solo[i]) << prompts[i];
}

TEST_F(ServerHttpTest, HugeMaxTokensIsClampedToTheContext) {
  json body = greedy_completion("Hi", 0);
  body["max_tokens"] = 1000000000000LL;
  const json r = post_ok("/v1/completions", body);
  EXPECT_EQ(r["choices"][0]["finish_reason"], "length");
  EXPECT_EQ(r["usage"]["total_tokens"], 256);
}

struct BadRequest {
  std::string path;
  std::string body;
  int status;
  const char* param;  // expected error.param, "" for none
};

std::vector<BadRequest> bad_requests() {
  const std::string c = "/v1/completions", ch = "/v1/chat/completions";
  const std::string big_prompt = [] {
    json p = json::array();
    for (int i = 0; i < 300; ++i) p.push_back(100 + i);
    return json{{"prompt", p}}.dump();
  }();
  return {
      {c, "{", 400, ""},
      {c, "", 400, ""},
      {c, "[1,2]", 400, ""},
      {c, "null", 400, ""},
      {c, R"({"prompt":"x","max_tokens":"5"})", 400, "max_tokens"},
      {c, R"({"prompt":"x","max_tokens":1.5})", 400, "max_tokens"},
      {c, R"({"prompt":"x","max_tokens":0})", 400, "max_tokens"},
      {c, R"({"prompt":"x","max_tokens":-5})", 400, "max_tokens"},
      {c, R"({"prompt":"x","temperature":"hot"})", 400, "temperature"},
      {c, R"({"prompt":"x","temperature":5})", 400, "temperature"},
      {c, R"({"prompt":"x","top_p":2})", 400, "top_p"},
      {c, R"({"prompt":"x","top_k":-1})", 400, "top_k"},
      {c, R"({"prompt":"x","min_p":-0.5})", 400, "min_p"},
      {c, R"({"prompt":"x","seed":"abc"})", 400, "seed"},
      {c, R"({"prompt":"x","stop":5})", 400, "stop"},
      {c, R"({"prompt":"x","stop":["a",1]})", 400, "stop[1]"},
      {c, R"({"prompt":"x","stream":"yes"})", 400, "stream"},
      {c, R"({"prompt":"x","n":2})", 400, "n"},
      {c, R"({"prompt":"x","presence_penalty":3})", 400, "presence_penalty"},
      {c, R"({"prompt":"x","frequency_penalty":"x"})", 400, "frequency_penalty"},
      {c, R"({"prompt":"x","stream_options":1})", 400, "stream_options"},
      {c, R"({"prompt":"x","stream_options":{"include_usage":"y"}})", 400,
       "stream_options.include_usage"},
      {c, R"({"prompt":"x","model":5})", 400, "model"},
      {c, R"({"max_tokens":5})", 400, "prompt"},
      {c, R"({"prompt":5})", 400, "prompt"},
      {c, R"({"prompt":[]})", 400, "prompt"},
      {c, R"({"prompt":[-1]})", 400, "prompt[0]"},
      {c, R"({"prompt":[5, 99999999]})", 400, "prompt[1]"},
      {c, R"({"prompt":["a","b"]})", 400, "prompt"},
      {c, big_prompt, 400, "prompt"},
      {ch, R"({"messages":"hi"})", 400, "messages"},
      {ch, R"({"messages":[]})", 400, "messages"},
      {ch, R"({})", 400, "messages"},
      {ch, R"({"messages":[1]})", 400, "messages[0]"},
      {ch, R"({"messages":[{"role":"user"}]})", 400, "messages[0].content"},
      {ch, R"({"messages":[{"role":5,"content":"x"}]})", 400, "messages[0].role"},
      {ch, R"({"messages":[{"role":"wizard","content":"x"}]})", 400, "messages[0].role"},
      {ch, R"({"messages":[{"role":"user","content":5}]})", 400, "messages[0].content"},
      {ch, R"({"messages":[{"role":"user","content":[{"type":"image_url"}]}]})", 400,
       "messages[0].content[0].type"},
      {"/v1/nothing", "{}", 404, ""},
  };
}

TEST_F(ServerHttpTest, MalformedRequestsGetTheRight4xxAndTheServerKeepsServing) {
  int n_checked = 0;
  for (const BadRequest& b : bad_requests()) {
    auto r = client().Post(b.path.c_str(), b.body, "application/json");
    ASSERT_TRUE(r) << b.body;
    EXPECT_EQ(r->status, b.status) << b.path << " " << b.body << " -> " << r->body;
    const json e = json::parse(r->body, nullptr, false);
    ASSERT_TRUE(e.contains("error")) << r->body;
    for (const char* k : {"message", "type", "param", "code"})
      EXPECT_TRUE(e["error"].contains(k)) << k;
    if (*b.param) {
      EXPECT_EQ(e["error"]["param"], b.param) << b.body;
    }
    ++n_checked;
  }
  // Oversized body, bad auth (missing, wrong, wrong scheme) and an unknown method.
  auto big = client().Post("/v1/completions", json{{"prompt", std::string(100000, 'a')}}.dump(),
                           "application/json");
  ASSERT_TRUE(big);
  EXPECT_EQ(big->status, 413);
  httplib::Client no_key("127.0.0.1", port_);
  auto r1 = no_key.Post("/v1/completions", R"({"prompt":"x"})", "application/json");
  ASSERT_TRUE(r1);
  EXPECT_EQ(r1->status, 401);
  EXPECT_EQ(json::parse(r1->body)["error"]["code"], "invalid_api_key");
  httplib::Client wrong_key("127.0.0.1", port_);
  wrong_key.set_bearer_token_auth("test-key-124");
  EXPECT_EQ(wrong_key.Get("/v1/models")->status, 401);
  httplib::Client basic("127.0.0.1", port_);
  basic.set_basic_auth("user", kKey);
  EXPECT_EQ(basic.Get("/metrics")->status, 401);
  EXPECT_EQ(client().Get("/v1/completions")->status, 404);
  n_checked += 5;
  EXPECT_GE(n_checked, 30);
  // Unknown fields are ignored, and the server still serves.
  json ok = greedy_completion("Hi", 3);
  ok["some_future_field"] = {{"x", 1}};
  EXPECT_EQ(post_ok("/v1/completions", ok)["usage"]["completion_tokens"], 3);
  EXPECT_EQ(client().Get("/health")->status, 200);
}

TEST_F(ServerHttpTest, CurlStreamsSse) {
  if (std::system("curl --version > /dev/null 2>&1") != 0) GTEST_SKIP() << "curl not installed";
  const std::string out = ::testing::TempDir() + "/tandem_curl_sse.txt";
  const std::string cmd =
      "curl -sN -H 'Authorization: Bearer " + std::string(kKey) +
      "' -H 'Content-Type: application/json' http://127.0.0.1:" + std::to_string(port_) +
      "/v1/chat/completions -d '{\"messages\":[{\"role\":\"user\",\"content\":\"hi\"}],"
      "\"max_tokens\":5,\"stream\":true}' > " +
      out;
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  std::ifstream f(out);
  std::stringstream text;
  text << f.rdbuf();
  const auto events = sse_events(text.str());
  ASSERT_GE(events.size(), 2u) << text.str();
  EXPECT_EQ(events.back(), "[DONE]");
}

// One slot, no queue: a disconnect must free the slot; a second request meanwhile gets 503;
// SIGTERM ends the process with status 0.
TEST(ServerLifecycleTest, DisconnectFreesTheSlotQueueFullIs503AndSigtermExitsCleanly) {
  TANDEM_REQUIRE_TINY_MODEL();
  test::ServeProcess server(R"({"server": {"max_parallel": 1, "queue_limit": 0, "retry_after_s": 7,
                                           "log_requests": false}, "context_size": 4096, "threads": 2})",
                            {"-m", test::tiny_model_path()});
  const int port = server.wait_until_healthy(180s);
  ASSERT_NE(port, 0) << server.log();
  httplib::Client c("127.0.0.1", port);
  c.set_read_timeout(60, 0);

  // A long stream on a raw socket: read its first event, then hang up.
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ASSERT_EQ(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0);
  const std::string body =
      R"({"prompt":"Once upon a time","max_tokens":4000,"temperature":0,"ignore_eos":true,"stream":true})";
  const std::string request =
      "POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
      "Content-Length: " +
      std::to_string(body.size()) + "\r\n\r\n" + body;
  ASSERT_EQ(::send(fd, request.data(), request.size(), 0), static_cast<ssize_t>(request.size()));
  std::string got;
  char buf[4096];
  while (got.find("data: ") == std::string::npos) {
    const ssize_t n = ::recv(fd, buf, sizeof buf, 0);
    ASSERT_GT(n, 0);
    got.append(buf, static_cast<size_t>(n));
  }
  // The only slot is busy and nothing may wait: 503 with Retry-After.
  auto busy = c.Post("/v1/completions", R"({"prompt":"x","max_tokens":2})", "application/json");
  ASSERT_TRUE(busy);
  EXPECT_EQ(busy->status, 503) << busy->body;
  EXPECT_EQ(busy->get_header_value("Retry-After"), "7");
  EXPECT_EQ(json::parse(busy->body)["error"]["code"], "queue_full");
  ::close(fd);

  // The slot comes back long before the 4000 tokens would have finished.
  bool freed = false;
  for (int i = 0; i < 200 && !freed; ++i) {
    auto m = c.Get("/metrics");
    freed = m && m->body.find("tandem_requests_cancelled_total 1\n") != std::string::npos &&
            m->body.find("tandem_active_sequences 0\n") != std::string::npos;
    if (!freed) std::this_thread::sleep_for(25ms);
  }
  EXPECT_TRUE(freed) << c.Get("/metrics")->body;
  auto after = c.Post("/v1/completions", R"({"prompt":"x","max_tokens":2})", "application/json");
  ASSERT_TRUE(after);
  EXPECT_EQ(after->status, 200) << after->body;
  EXPECT_EQ(server.signal_and_wait(SIGTERM), 0) << server.log();
}

}  // namespace
}  // namespace tandem
