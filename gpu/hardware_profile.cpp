#include "gpu/hardware_profile.h"

#include <cmath>
#include <fstream>
#include <initializer_list>
#include <optional>
#include <sstream>

#include <nlohmann/json.hpp>

namespace tandem {
namespace {

constexpr double kGiB = 1024.0 * 1024.0 * 1024.0;

// The first of `keys` present in obj as a number. Several spellings are accepted because
// profiles are hand-written and shared with the scheduler's cost model.
std::optional<double> number(const nlohmann::json& obj, std::initializer_list<const char*> keys,
                             const std::string& source) {
  for (const char* key : keys) {
    auto it = obj.find(key);
    if (it == obj.end() || it->is_null()) continue;
    if (!it->is_number()) {
      throw HardwareProfileError(source + ": gpu." + key + " must be a number, got " + it->dump());
    }
    return it->get<double>();
  }
  return std::nullopt;
}

double required(const nlohmann::json& obj, std::initializer_list<const char*> keys,
                const std::string& source) {
  if (auto v = number(obj, keys, source)) return *v;
  throw HardwareProfileError(source + ": gpu." + *keys.begin() + " is missing");
}

const nlohmann::json& gpu_object(const nlohmann::json& doc, const std::string& source) {
  if (!doc.is_object())
    throw HardwareProfileError(source + ": a hardware profile must be a JSON object");
  if (auto it = doc.find("gpu"); it != doc.end()) {
    if (!it->is_object()) throw HardwareProfileError(source + ": \"gpu\" must be an object");
    return *it;
  }
  return doc;
}

void check_positive(double v, const char* field, const std::string& source) {
  if (!(v > 0.0) || !std::isfinite(v)) {
    throw HardwareProfileError(source + ": gpu." + field + " must be a positive number, got " +
                               std::to_string(v));
  }
}

}  // namespace

double HardwareProfile::ops_per_us(GgmlType type) const {
  switch (type) {
    case GgmlType::F32:
      return fp32_tflops * 1e6;
    case GgmlType::F16:
      return fp16_tflops * 1e6;
    case GgmlType::BF16:
      return bf16_tflops * 1e6;
    default:
      return int8_tops * 1e6;
  }
}

void HardwareProfile::validate(const std::string& source) const {
  check_positive(hbm_gbps, "hbm_gbps", source);
  check_positive(fp32_tflops, "fp32_tflops", source);
  check_positive(fp16_tflops, "fp16_tflops", source);
  check_positive(bf16_tflops, "bf16_tflops", source);
  check_positive(int8_tops, "int8_tops", source);
  check_positive(pcie_gbps, "pcie_gbps", source);
  if (pcie_latency_us < 0.0)
    throw HardwareProfileError(source + ": gpu.pcie_latency_us is negative");
  if (launch_overhead_us < 0.0) {
    throw HardwareProfileError(source + ": gpu.launch_overhead_us is negative");
  }
}

HardwareProfile parse_hardware_profile(const std::string& json_text, const std::string& source) {
  nlohmann::json doc;
  try {
    doc = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw HardwareProfileError(source + ": not valid JSON: " + e.what());
  }
  const nlohmann::json& g = gpu_object(doc, source);
  HardwareProfile p;
  if (auto it = g.find("name"); it != g.end() && it->is_string()) p.name = it->get<std::string>();
  if (auto it = doc.find("name"); p.name.empty() && it != doc.end() && it->is_string()) {
    p.name = it->get<std::string>();
  }
  if (auto bytes = number(g, {"vram_bytes", "memory_bytes"}, source)) {
    p.vram_bytes = static_cast<uint64_t>(*bytes);
  } else if (auto gib = number(g, {"vram_gb", "vram_gib", "memory_gb", "memory_gib"}, source)) {
    // Vendors' "24 GB" cards hold 24 GiB, so GB here means GiB.
    p.vram_bytes = static_cast<uint64_t>(*gib * kGiB);
  }
  p.hbm_gbps =
      required(g, {"hbm_gbps", "memory_bandwidth_gbps", "mem_bandwidth_gbps", "vram_gbps"}, source);
  p.fp16_tflops = required(g, {"fp16_tflops", "tflops_fp16", "fp16_tensor_tflops"}, source);
  p.bf16_tflops = number(g, {"bf16_tflops", "tflops_bf16"}, source).value_or(p.fp16_tflops);
  p.fp32_tflops = number(g, {"fp32_tflops", "tflops_fp32"}, source).value_or(p.fp16_tflops / 4.0);
  p.int8_tops =
      number(g, {"int8_tops", "int8_tflops", "tops_int8"}, source).value_or(2.0 * p.fp16_tflops);
  p.pcie_gbps = required(g, {"pcie_gbps", "pcie_bandwidth_gbps", "h2d_gbps"}, source);
  p.pcie_latency_us = number(g, {"pcie_latency_us", "h2d_latency_us"}, source).value_or(0.0);
  p.launch_overhead_us =
      number(g, {"launch_overhead_us", "kernel_launch_us"}, source).value_or(0.0);
  p.validate(source);
  return p;
}

HardwareProfile load_hardware_profile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw HardwareProfileError("hardware profile '" + path + "' cannot be opened");
  std::stringstream text;
  text << in.rdbuf();
  return parse_hardware_profile(text.str(), path);
}

}  // namespace tandem
