// The `tandem serve` configuration file: JSON with sections model, server, context_size,
// threads, kv_type, gpu and scheduler. configs/README.md documents every field.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>

namespace tandem {

// A config file or value that cannot be used; the message names the key (e.g. "server.port").
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct ModelConfig {
  std::string path;                    // "" -> the demo model (generated on first use)
  std::string chat_template = "auto";  // auto | chatml | mistral | llama3 | deepseek | deepseek3
  bool mmap = false;                   // map the file instead of reading it into memory
};

struct ServerConfig {
  std::string host = "127.0.0.1";
  int32_t port = 8080;
  std::string api_key;       // "" -> no authentication
  int32_t max_parallel = 8;  // sequences decoded together (KV slots)
  int32_t queue_limit = 64;  // requests waiting for a slot before 503
  int64_t body_limit_bytes = 1 << 20;
  int32_t prefill_chunk = 256;       // prompt tokens per forward step, over all sequences
  int32_t default_max_tokens = 256;  // when a request gives no max_tokens
  int32_t retry_after_s = 1;         // Retry-After of a 503 when the queue is full
  double shutdown_grace_s = 5.0;     // in-flight requests may finish this long after SIGTERM
  bool log_requests = true;
};

struct GpuSection {
  std::string device = "none";    // "none", "sim", or a CUDA device index as a string
  double memory_budget_gb = 0.0;  // 0: the whole free memory of the device
  double expert_cache_gb = -1.0;  // < 0: the budget minus working buffers
  std::string hardware_profile;   // sim: hardware profile JSON (empty: the RTX 4090 desktop one)
};

struct SchedulerSection {
  std::string policy = "auto";
  int32_t defer_experts = 0;  // expert deferral (0: off)
  std::vector<int32_t> pin_layers;    // layers whose experts stay resident (tandem)
  std::string eviction = "next-use";  // tandem's cache ranking
};

struct ServeConfig {
  ModelConfig model;
  ServerConfig server;
  int32_t context_size = 4096;  // tokens per sequence
  int32_t threads = 0;          // 0: all physical cores
  std::string kv_type = "f32";  // f32 | f16
  GpuSection gpu;
  SchedulerSection scheduler;
  // The gpu and scheduler sections as written, for the components that own their other keys.
  nlohmann::json gpu_json = nlohmann::json::object();
  nlohmann::json scheduler_json = nlohmann::json::object();
};

// Parses and validates a config; throws ConfigError naming the offending key.
ServeConfig parse_serve_config(const nlohmann::json& root);
// Reads a file (ConfigError names the file on I/O or JSON syntax errors).
ServeConfig load_serve_config(const std::string& path);

}  // namespace tandem
