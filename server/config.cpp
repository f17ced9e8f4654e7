#include "server/config.h"

#include <fstream>
#include <functional>
#include <map>
#include <sstream>

namespace tandem {
namespace {

using nlohmann::json;

std::string type_name(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number()) return "number";
  return v.type_name();
}

// Reads one JSON object: each known key has a setter; any other key is an error naming it.
class Section {
 public:
  Section(const json& object, std::string prefix) : object_(object), prefix_(std::move(prefix)) {
    if (!object_.is_object())
      fail(prefix_.empty() ? "config" : prefix_.substr(0, prefix_.size() - 1), "an object",
           object_);
  }

  void str(const std::string& key, std::string& out) {
    handlers_[key] = [&out, this, key](const json& v) {
      if (!v.is_string()) fail(prefix_ + key, "a string", v);
      out = v.get<std::string>();
    };
  }
  template <class Int>
  void integer(const std::string& key, Int& out, int64_t lo, int64_t hi) {
    handlers_[key] = [&out, this, key, lo, hi](const json& v) {
      if (!v.is_number_integer()) fail(prefix_ + key, "an integer", v);
      const int64_t x = v.get<int64_t>();
      if (x < lo || x > hi) range(prefix_ + key, std::to_string(lo), std::to_string(hi), v);
      out = static_cast<Int>(x);
    };
  }
  void number(const std::string& key, double& out, double lo, double hi) {
    handlers_[key] = [&out, this, key, lo, hi](const json& v) {
      if (!v.is_number()) fail(prefix_ + key, "a number", v);
      const double x = v.get<double>();
      if (!(x >= lo && x <= hi)) range(prefix_ + key, std::to_string(lo), std::to_string(hi), v);
      out = x;
    };
  }
  void boolean(const std::string& key, bool& out) {
    handlers_[key] = [&out, this, key](const json& v) {
      if (!v.is_boolean()) fail(prefix_ + key, "true or false", v);
      out = v.get<bool>();
    };
  }
  void custom(const std::string& key, std::function<void(const json&)> handler) {
    handlers_[key] = std::move(handler);
  }

  // open: keys without a handler are kept for their owner instead of rejected.
  void run(bool open = false) {
    for (const auto& [key, value] : object_.items()) {
      const auto it = handlers_.find(key);
      if (it != handlers_.end())
        it->second(value);
      else if (!open)
        throw ConfigError("unknown config key '" + prefix_ + key + "'");
    }
  }

  [[noreturn]] static void fail(const std::string& key, const std::string& want, const json& v) {
    throw ConfigError("config key '" + key + "' must be " + want + ", got " + type_name(v) + " " +
                      v.dump());
  }
  [[noreturn]] static void range(const std::string& key, const std::string& lo,
                                 const std::string& hi, const json& v) {
    throw ConfigError("config key '" + key + "' = " + v.dump() + " is outside [" + lo + ", " + hi +
                      "]");
  }

 private:
  const json& object_;
  std::string prefix_;
  std::map<std::string, std::function<void(const json&)>> handlers_;
};

void check_choice(const std::string& key, const std::string& value,
                  std::initializer_list<const char*> choices) {
  std::string list;
  for (const char* c : choices) {
    if (value == c) return;
    list += std::string(list.empty() ? "" : ", ") + c;
  }
  throw ConfigError("config key '" + key + "' = \"" + value + "\" is not one of: " + list);
}

void parse_model(const json& v, ModelConfig& m) {
  Section s(v, "model.");
  s.str("path", m.path);
  s.str("chat_template", m.chat_template);
  s.boolean("mmap", m.mmap);
  s.run();
  check_choice("model.chat_template", m.chat_template,
               {"auto", "chatml", "mistral", "llama3", "deepseek", "deepseek3"});
}

void parse_server(const json& v, ServerConfig& c) {
  Section s(v, "server.");
  s.str("host", c.host);
  s.integer("port", c.port, 0, 65535);
  s.str("api_key", c.api_key);
  s.integer("max_parallel", c.max_parallel, 1, 256);
  s.integer("queue_limit", c.queue_limit, 0, 100000);
  s.integer("body_limit_bytes", c.body_limit_bytes, 1024, int64_t{1} << 32);
  s.integer("prefill_chunk", c.prefill_chunk, 1, 65536);
  s.integer("default_max_tokens", c.default_max_tokens, 1, 1 << 24);
  s.integer("retry_after_s", c.retry_after_s, 0, 3600);
  s.number("shutdown_grace_s", c.shutdown_grace_s, 0, 3600);
  s.boolean("log_requests", c.log_requests);
  s.run();
  if (c.host.empty()) throw ConfigError("config key 'server.host' must not be empty");
}

void parse_gpu(const json& v, GpuSection& g) {
  Section s(v, "gpu.");
  s.custom("device", [&g](const json& d) {
    if (d.is_number_integer() && d.get<int64_t>() >= 0)
      g.device = std::to_string(d.get<int64_t>());
    else if (d.is_string() && (d == "none" || d == "sim"))
      g.device = d.get<std::string>();
    else
      Section::fail("gpu.device", "\"none\", \"sim\" or a device index >= 0", d);
  });
  s.number("memory_budget_gb", g.memory_budget_gb, 0, 1e6);
  s.number("expert_cache_gb", g.expert_cache_gb, 0, 1e6);
  s.str("hardware_profile", g.hardware_profile);
  s.run();
}

void parse_scheduler(const json& v, SchedulerSection& c) {
  Section s(v, "scheduler.");
  s.str("policy", c.policy);
  s.integer("defer_experts", c.defer_experts, 0, 1024);
  s.str("eviction", c.eviction);
  s.custom("pin_layers", [&c](const json& layers) {
    if (!layers.is_array())
      Section::fail("scheduler.pin_layers", "an array of layer indices", layers);
    c.pin_layers.clear();
    for (const json& l : layers) {
      if (!l.is_number_integer() || l.get<int64_t>() < 0 || l.get<int64_t>() > (1 << 20))
        Section::fail("scheduler.pin_layers", "an array of layer indices >= 0", layers);
      c.pin_layers.push_back(l.get<int32_t>());
    }
  });
  s.run(true);
}

}  // namespace

ServeConfig parse_serve_config(const json& root) {
  ServeConfig c;
  Section s(root, "");
  s.custom("model", [&c](const json& v) { parse_model(v, c.model); });
  s.custom("server", [&c](const json& v) { parse_server(v, c.server); });
  s.integer("context_size", c.context_size, 16, 1 << 22);
  s.integer("threads", c.threads, 0, 4096);
  s.str("kv_type", c.kv_type);
  s.custom("gpu", [&c](const json& v) {
    parse_gpu(v, c.gpu);
    c.gpu_json = v;
  });
  s.custom("scheduler", [&c](const json& v) {
    parse_scheduler(v, c.scheduler);
    c.scheduler_json = v;
  });
  s.custom("$comment", [](const json&) {});  // free text for people editing the file
  s.run();
  check_choice("kv_type", c.kv_type, {"f32", "f16"});
  return c;
}

ServeConfig load_serve_config(const std::string& path) {
  std::ifstream f(path);
  if (!f) throw ConfigError("cannot open config file '" + path + "'");
  std::stringstream text;
  text << f.rdbuf();
  json root;
  try {
    root = json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw ConfigError("config file '" + path + "' is not valid JSON: " + e.what());
  }
  try {
    return parse_serve_config(root);
  } catch (const ConfigError& e) {
    throw ConfigError(path + ": " + e.what());
  }
}

}  // namespace tandem
