#include "scheduler/hardware.h"

#include <cmath>
#include <fstream>
#include <sstream>

#include <nlohmann/json.hpp>

namespace tandem::sched {
namespace {

using nlohmann::json;

class Reader {
 public:
  Reader(const json& obj, std::string prefix, std::string source)
      : obj_(obj), prefix_(std::move(prefix)), source_(std::move(source)) {}

  double positive(const char* key) const {
    const json* v = find(key);
    if (!v) fail(key, "is missing");
    return check_positive(key, *v);
  }
  double positive_or(const char* key, double fallback) const {
    const json* v = find(key);
    return v ? check_positive(key, *v) : fallback;
  }
  double non_negative_or(const char* key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    const double x = number(key, *v);
    if (x < 0.0) fail(key, "must not be negative, got " + v->dump());
    return x;
  }
  double fraction_or(const char* key, double fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    const double x = number(key, *v);
    if (!(x > 0.0 && x <= 1.0)) fail(key, "must be in (0, 1], got " + v->dump());
    return x;
  }
  std::string text_or(const char* key, const std::string& fallback) const {
    const json* v = find(key);
    if (!v) return fallback;
    if (!v->is_string()) fail(key, "must be a string, got " + v->dump());
    return v->get<std::string>();
  }

 private:
  const json* find(const char* key) const {
    auto it = obj_.find(key);
    return it == obj_.end() || it->is_null() ? nullptr : &*it;
  }
  double number(const char* key, const json& v) const {
    if (!v.is_number()) fail(key, "must be a number, got " + v.dump());
    const double x = v.get<double>();
    if (!std::isfinite(x)) fail(key, "must be finite");
    return x;
  }
  double check_positive(const char* key, const json& v) const {
    const double x = number(key, v);
    if (!(x > 0.0)) fail(key, "must be a positive number, got " + v.dump());
    return x;
  }
  [[noreturn]] void fail(const char* key, const std::string& what) const {
    throw HardwareError(source_ + ": " + prefix_ + key + " " + what);
  }

  const json& obj_;
  std::string prefix_;
  std::string source_;
};

const json& object_at(const json& doc, const char* key, const std::string& source) {
  auto it = doc.find(key);
  if (it == doc.end()) throw HardwareError(source + ": \"" + key + "\" section is missing");
  if (!it->is_object()) throw HardwareError(source + ": \"" + key + "\" must be an object");
  return *it;
}

GpuSpec parse_gpu(const json& g, const std::string& source) {
  const Reader r(g, "gpu.", source);
  GpuSpec s;
  s.name = r.text_or("name", "gpu");
  s.vram_gb = r.positive("vram_gb");
  s.hbm_gbps = r.positive("hbm_gbps");
  s.fp16_tflops = r.positive("fp16_tflops");
  s.bf16_tflops = r.positive_or("bf16_tflops", s.fp16_tflops);
  s.fp32_tflops = r.positive_or("fp32_tflops", s.fp16_tflops / 4.0);
  s.int8_tops = r.positive_or("int8_tops", 2.0 * s.fp16_tflops);
  s.pcie_gbps = r.positive("pcie_gbps");
  s.pcie_latency_us = r.non_negative_or("pcie_latency_us", 0.0);
  s.launch_overhead_us = r.non_negative_or("launch_overhead_us", 0.0);
  return s;
}

CpuSpec parse_cpu(const json& c, const std::string& source) {
  const Reader r(c, "cpu.", source);
  CpuSpec s;
  s.name = r.text_or("name", "cpu");
  const double cores = r.positive("cores");
  if (cores != std::floor(cores)) throw HardwareError(source + ": cpu.cores must be an integer");
  s.cores = static_cast<int>(cores);
  s.dram_gb = r.positive("dram_gb");
  s.dram_gbps = r.positive("dram_gbps");
  s.int8_tops = r.positive("int8_tops");
  s.bf16_tflops = r.positive("bf16_tflops");
  s.fp32_tflops = r.positive_or("fp32_tflops", s.bf16_tflops / 2.0);
  return s;
}

Efficiency parse_efficiency(const json& doc, const std::string& source) {
  Efficiency e;
  auto it = doc.find("efficiency");
  if (it == doc.end()) return e;
  if (!it->is_object()) throw HardwareError(source + ": \"efficiency\" must be an object");
  const Reader r(*it, "efficiency.", source);
  e.gpu_memory = r.fraction_or("gpu_memory", e.gpu_memory);
  e.gpu_compute = r.fraction_or("gpu_compute", e.gpu_compute);
  e.cpu_memory = r.fraction_or("cpu_memory", e.cpu_memory);
  e.cpu_compute = r.fraction_or("cpu_compute", e.cpu_compute);
  return e;
}

std::map<std::string, std::string> parse_sources(const json& doc, const std::string& source) {
  const json& s = object_at(doc, "sources", source);
  if (s.empty())
    throw HardwareError(source + ": \"sources\" must cite where the figures come from");
  std::map<std::string, std::string> out;
  for (auto it = s.begin(); it != s.end(); ++it) {
    if (!it->is_string() || it->get<std::string>().empty()) {
      throw HardwareError(source + ": sources." + it.key() + " must be a non-empty string");
    }
    out[it.key()] = it->get<std::string>();
  }
  return out;
}

}  // namespace

HardwareSpec parse_hardware_spec(const json& doc, const std::string& source) {
  if (!doc.is_object()) throw HardwareError(source + ": a hardware profile must be a JSON object");
  HardwareSpec h;
  const Reader top(doc, "", source);
  h.name = top.text_or("name", source);
  h.description = top.text_or("description", "");
  if (auto it = doc.find("gpu"); it != doc.end() && !it->is_null()) {
    h.gpu = parse_gpu(object_at(doc, "gpu", source), source);
    h.has_gpu = true;
  }
  h.cpu = parse_cpu(object_at(doc, "cpu", source), source);
  h.efficiency = parse_efficiency(doc, source);
  h.sources = parse_sources(doc, source);
  return h;
}

HardwareSpec load_hardware_spec(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw HardwareError("hardware profile '" + path + "' cannot be opened");
  std::stringstream text;
  text << in.rdbuf();
  json doc;
  try {
    doc = json::parse(text.str());
  } catch (const json::parse_error& e) {
    throw HardwareError(path + ": not valid JSON: " + e.what());
  }
  return parse_hardware_spec(doc, path);
}

}  // namespace tandem::sched
