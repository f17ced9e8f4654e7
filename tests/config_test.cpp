#include "server/config.h"

#include <gtest/gtest.h>

#include <fstream>

namespace tandem {
namespace {

using nlohmann::json;

std::string error_of(const json& j) {
  try {
    parse_serve_config(j);
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

TEST(Config, DefaultsWhenEmpty) {
  const ServeConfig c = parse_serve_config(json::object());
  EXPECT_EQ(c.server.host, "127.0.0.1");
  EXPECT_EQ(c.server.port, 8080);
  EXPECT_EQ(c.server.max_parallel, 8);
  EXPECT_EQ(c.model.chat_template, "auto");
  EXPECT_EQ(c.gpu.device, "none");
  EXPECT_TRUE(c.model.path.empty());
  EXPECT_FALSE(c.model.mmap);
}

TEST(Config, ReadsEverySection) {
  const json j = json::parse(R"({
    "model": {"path": "m.gguf", "chat_template": "llama3", "mmap": true},
    "server": {"host": "0.0.0.0", "port": 9000, "api_key": "k", "max_parallel": 4, "queue_limit": 3,
               "body_limit_bytes": 4096, "prefill_chunk": 64, "default_max_tokens": 10,
               "retry_after_s": 2, "shutdown_grace_s": 0.5, "log_requests": false},
    "context_size": 1024, "threads": 2, "kv_type": "f16",
    "gpu": {"device": 0, "memory_budget_gb": 12.5, "expert_cache_gb": 10, "hardware_profile": "h.json"},
    "scheduler": {"policy": "cost", "prefetch": true, "defer_experts": 2,
                  "pin_layers": [0, 3], "eviction": "lru"}})");
  const ServeConfig c = parse_serve_config(j);
  EXPECT_EQ(c.model.path, "m.gguf");
  EXPECT_EQ(c.model.chat_template, "llama3");
  EXPECT_TRUE(c.model.mmap);
  EXPECT_EQ(c.server.port, 9000);
  EXPECT_EQ(c.server.api_key, "k");
  EXPECT_EQ(c.server.queue_limit, 3);
  EXPECT_EQ(c.server.body_limit_bytes, 4096);
  EXPECT_DOUBLE_EQ(c.server.shutdown_grace_s, 0.5);
  EXPECT_FALSE(c.server.log_requests);
  EXPECT_EQ(c.context_size, 1024);
  EXPECT_EQ(c.kv_type, "f16");
  EXPECT_EQ(c.gpu.device, "0");
  EXPECT_DOUBLE_EQ(c.gpu.memory_budget_gb, 12.5);
  EXPECT_DOUBLE_EQ(c.gpu.expert_cache_gb, 10.0);
  EXPECT_EQ(c.gpu.hardware_profile, "h.json");
  EXPECT_THROW(parse_serve_config(nlohmann::json::parse(R"({"gpu": {"expert_cache": "lru"}})")), ConfigError);
  EXPECT_EQ(c.scheduler.policy, "cost");
  EXPECT_EQ(c.scheduler.defer_experts, 2);
  EXPECT_EQ(c.scheduler.pin_layers, (std::vector<int32_t>{0, 3}));
  EXPECT_EQ(c.scheduler.eviction, "lru");
}

TEST(Config, UnknownKeysAreRejectedByName) {
  EXPECT_NE(error_of({{"modle", "x"}}).find("'modle'"), std::string::npos);
  EXPECT_NE(error_of({{"server", {{"prot", 1}}}}).find("'server.prot'"), std::string::npos);
  EXPECT_NE(error_of({{"model", {{"file", "x"}}}}).find("'model.file'"), std::string::npos);
}

TEST(Config, WrongTypesAndRangesNameTheKey) {
  EXPECT_NE(error_of({{"server", {{"port", "80"}}}}).find("'server.port' must be an integer"),
            std::string::npos);
  EXPECT_NE(error_of({{"server", {{"port", 70000}}}}).find("'server.port'"), std::string::npos);
  EXPECT_NE(error_of({{"server", {{"max_parallel", 0}}}}).find("'server.max_parallel'"),
            std::string::npos);
  EXPECT_NE(error_of({{"server", 3}}).find("'server' must be an object"), std::string::npos);
  EXPECT_NE(error_of({{"context_size", 1.5}}).find("'context_size'"), std::string::npos);
  EXPECT_NE(error_of({{"kv_type", "q8"}}).find("'kv_type'"), std::string::npos);
  EXPECT_NE(error_of({{"model", {{"chat_template", "vicuna"}}}}).find("'model.chat_template'"),
            std::string::npos);
  EXPECT_NE(error_of({{"gpu", {{"device", "cuda"}}}}).find("'gpu.device'"), std::string::npos);
  EXPECT_NE(error_of({{"gpu", {{"device", -1}}}}).find("'gpu.device'"), std::string::npos);
  EXPECT_NE(error_of({{"gpu", {{"memory_budget_gb", "8"}}}}).find("'gpu.memory_budget_gb'"),
            std::string::npos);
  EXPECT_NE(error_of({{"scheduler", {{"policy", 1}}}}).find("'scheduler.policy'"),
            std::string::npos);
  EXPECT_NE(error_of({{"scheduler", {{"defer_experts", -1}}}}).find("'scheduler.defer_experts'"),
            std::string::npos);
  EXPECT_NE(error_of({{"model", {{"mmap", "yes"}}}}).find("'model.mmap'"), std::string::npos);
  EXPECT_NE(error_of({{"scheduler", {{"pin_layers", 3}}}}).find("'scheduler.pin_layers'"),
            std::string::npos);
  EXPECT_NE(error_of({{"scheduler", {{"pin_layers", {0, -1}}}}}).find("'scheduler.pin_layers'"),
            std::string::npos);
  EXPECT_NE(error_of({{"scheduler", {{"eviction", 2}}}}).find("'scheduler.eviction'"),
            std::string::npos);
  EXPECT_NE(error_of(json::array()).find("must be an object"), std::string::npos);
}

TEST(Config, ShippedConfigsParse) {
  for (const char* name : {"default.json"}) {
    const std::string path = std::string(TANDEM_SOURCE_DIR) + "/configs/" + name;
    EXPECT_NO_THROW(load_serve_config(path)) << path;
  }
}

TEST(Config, FileErrorsNameTheFile) {
  const std::string path = ::testing::TempDir() + "/tandem_bad_config.json";
  std::ofstream(path) << "{\"server\": {";
  try {
    load_serve_config(path);
    FAIL();
  } catch (const ConfigError& e) {
    EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
  }
  EXPECT_THROW(load_serve_config(path + ".missing"), ConfigError);
}

}  // namespace
}  // namespace tandem
