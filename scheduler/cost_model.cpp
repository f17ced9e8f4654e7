#include "scheduler/cost_model.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <map>
#include <stdexcept>

namespace tandem::sched {
namespace {

// Fork/join of one expert over the CPU thread pool (assumption, a few microseconds).
constexpr double kCpuExpertOverheadUs = 3.0;
// Kernels per GPU expert: gate+up fused, then down.
constexpr double kGpuKernelsPerExpert = 2.0;

struct LineFit {
  double a = 0.0;  // intercept
  double c = 0.0;  // slope
  bool ok = false;
};

// Weighted least squares t = a + c x with weights 1 / t^2 (relative error).
LineFit fit_line(const std::vector<Sample>& s, size_t begin, size_t end) {
  double sw = 0, sx = 0, sy = 0, sxx = 0, sxy = 0;
  for (size_t i = begin; i < end; ++i) {
    const double w = 1.0 / (s[i].time_us * s[i].time_us);
    sw += w;
    sx += w * s[i].x;
    sy += w * s[i].time_us;
    sxx += w * s[i].x * s[i].x;
    sxy += w * s[i].x * s[i].time_us;
  }
  LineFit f;
  const double det = sw * sxx - sx * sx;
  if (end - begin < 2 || std::fabs(det) <= 1e-12 * std::max(1.0, sw * sxx)) return f;
  f.c = (sw * sxy - sx * sy) / det;
  f.a = (sy - f.c * sx) / sw;
  f.ok = true;
  return f;
}

double weighted_mean(const std::vector<Sample>& s, size_t begin, size_t end) {
  double sw = 0, sy = 0;
  for (size_t i = begin; i < end; ++i) {
    const double w = 1.0 / (s[i].time_us * s[i].time_us);
    sw += w;
    sy += w * s[i].time_us;
  }
  return sy / sw;
}

double relative_sse(const ExpertCurve& c, const std::vector<Sample>& s) {
  double e = 0;
  for (const Sample& x : s) {
    const double r = (c.predict(x.x) - x.time_us) / x.time_us;
    e += r * r;
  }
  return e;
}

void check_samples(const std::vector<Sample>& samples, const char* what) {
  if (samples.size() < 2) {
    throw std::invalid_argument(std::string(what) + " fit needs at least 2 samples, got " +
                                std::to_string(samples.size()));
  }
  for (const Sample& s : samples) {
    if (!(s.time_us > 0.0) || !std::isfinite(s.time_us) || !(s.x >= 0.0)) {
      throw std::invalid_argument(std::string(what) + " fit: sample (" + std::to_string(s.x) +
                                  ", " + std::to_string(s.time_us) +
                                  " us) is not a positive measurement");
    }
  }
}

double class_rate(WeightClass wc, double int8, double half, double f32) {
  switch (wc) {
    case WeightClass::Float32:
      return f32;
    case WeightClass::Half:
      return half;
    case WeightClass::Quantized:
      break;
  }
  return int8;
}

void update_error(double& ewma, int64_t n_seen, double predicted, double measured) {
  const double rel = std::fabs(predicted - measured) / measured;
  ewma = n_seen == 0 ? rel : (1.0 - CostModel::kErrorAlpha) * ewma + CostModel::kErrorAlpha * rel;
}

double get_number(const nlohmann::json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number()) {
    throw std::invalid_argument("cost profile: " + where + "." + key + " must be a number");
  }
  const double v = it->get<double>();
  if (!std::isfinite(v) || v < 0.0) {
    throw std::invalid_argument("cost profile: " + where + "." + key + " must be >= 0");
  }
  return v;
}

}  // namespace

const char* device_name(Device d) {
  return d == Device::Cpu ? "cpu" : "gpu";
}

double ExpertCurve::predict(double n_tokens) const {
  if (points.size() >= 2) {
    if (n_tokens <= points.front().x) return points.front().time_us;
    size_t i = 1;
    while (i + 1 < points.size() && points[i].x < n_tokens) ++i;
    const Sample& a = points[i - 1];
    const Sample& b = points[i];
    return a.time_us + (b.time_us - a.time_us) * (n_tokens - a.x) / (b.x - a.x);
  }
  return overhead_us + std::max(fixed_us, per_token_us * n_tokens);
}

ExpertCurve ExpertCurve::interpolate(const std::vector<Sample>& samples) {
  check_samples(samples, "expert curve");
  std::map<double, std::vector<double>> by_tokens;
  for (const Sample& s : samples) by_tokens[s.x].push_back(s.time_us);
  if (by_tokens.size() < 2) {
    throw std::invalid_argument("expert curve: interpolation needs two distinct token counts");
  }
  ExpertCurve c = fit(samples);  // the formula too, for readers of the profile
  for (auto& [tokens, times] : by_tokens) {
    std::sort(times.begin(), times.end());
    const size_t n = times.size();
    const double median = n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
    c.points.push_back({tokens, median});
  }
  return c;
}

ExpertCurve ExpertCurve::fit(const std::vector<Sample>& samples) {
  check_samples(samples, "expert curve");
  std::vector<Sample> s = samples;
  std::sort(s.begin(), s.end(), [](const Sample& a, const Sample& b) { return a.x < b.x; });
  ExpertCurve best;
  double best_err = std::numeric_limits<double>::infinity();
  auto consider = [&](const ExpertCurve& c) {
    const double e = relative_sse(c, s);
    if (e < best_err) best_err = e, best = c;
  };
  // All flat: a bandwidth-bound device over the whole measured range.
  consider(ExpertCurve{0.0, weighted_mean(s, 0, s.size()), 0.0});
  // Flat below split k (a level), linear above it (overhead + per_token * n).
  for (size_t k = 0; k + 2 <= s.size(); ++k) {
    if (k > 0 && s[k].x == s[k - 1].x) continue;  // a split must fall between distinct x
    const LineFit line = fit_line(s, k, s.size());
    if (!line.ok) continue;
    ExpertCurve c;
    c.overhead_us = std::max(0.0, line.a);
    c.per_token_us = std::max(0.0, line.c);
    const double level = k > 0 ? weighted_mean(s, 0, k) : 0.0;
    c.fixed_us = std::max(0.0, level - c.overhead_us);
    consider(c);
  }
  return best;
}

CopyCurve CopyCurve::fit(const std::vector<Sample>& samples) {
  check_samples(samples, "copy curve");
  const LineFit line = fit_line(samples, 0, samples.size());
  CopyCurve c;
  if (!line.ok) {  // all samples at one size: no way to split latency from bandwidth
    double sum = 0, bytes = 0;
    for (const Sample& s : samples) sum += s.time_us, bytes += s.x;
    c.us_per_byte = bytes > 0 ? sum / bytes : 0.0;
    if (bytes == 0) c.latency_us = sum / static_cast<double>(samples.size());
    return c;
  }
  c.latency_us = std::max(0.0, line.a);
  c.us_per_byte = std::max(0.0, line.c);
  return c;
}

double Roofline::predict(double bytes, double ops) const {
  const double mem = bytes_per_us > 0 ? bytes / bytes_per_us : 0.0;
  const double math = ops_per_us > 0 ? ops / ops_per_us : 0.0;
  return overhead_us + std::max(mem, math);
}

CostModel CostModel::from_hardware(const HardwareSpec& hw, const ModelShape& shape) {
  CostModel m;
  m.weight_type_ = shape.weight_type;
  m.expert_bytes_ = shape.expert_bytes;
  const Efficiency& e = hw.efficiency;
  const WeightClass wc = shape.weight_class;
  m.cpu_roof_.bytes_per_us = hw.cpu.dram_gbps * 1e3 * e.cpu_memory;
  m.cpu_roof_.ops_per_us =
      class_rate(wc, hw.cpu.int8_tops, hw.cpu.bf16_tflops, hw.cpu.fp32_tflops) * 1e6 *
      e.cpu_compute;
  const double ops = shape.expert_ops_per_token();
  CurveState& cpu = m.state(Device::Cpu, shape.weight_type);
  cpu.curve = {kCpuExpertOverheadUs, shape.expert_bytes / m.cpu_roof_.bytes_per_us,
               ops / m.cpu_roof_.ops_per_us};
  m.has_gpu_ = hw.has_gpu;
  if (hw.has_gpu) {
    const GpuSpec& g = hw.gpu;
    m.gpu_roof_.bytes_per_us = g.hbm_gbps * 1e3 * e.gpu_memory;
    m.gpu_roof_.ops_per_us =
        class_rate(wc, g.int8_tops, g.bf16_tflops, g.fp32_tflops) * 1e6 * e.gpu_compute;
    m.gpu_roof_.overhead_us = g.launch_overhead_us;
    CurveState& gpu = m.state(Device::Gpu, shape.weight_type);
    gpu.curve = {kGpuKernelsPerExpert * g.launch_overhead_us,
                 shape.expert_bytes / m.gpu_roof_.bytes_per_us, ops / m.gpu_roof_.ops_per_us};
    m.copy_ = {g.pcie_latency_us, 1.0 / (g.pcie_gbps * 1e3)};
  }
  return m;
}

CostModel::CurveState& CostModel::state(Device d, const std::string& type) {
  return (d == Device::Cpu ? cpu_ : gpu_)[type];
}

const CostModel::CurveState* CostModel::find_state(Device d, const std::string& type) const {
  const auto& map = d == Device::Cpu ? cpu_ : gpu_;
  auto it = map.find(type);
  return it == map.end() ? nullptr : &it->second;
}

const ExpertCurve& CostModel::curve(Device d, const std::string& type) const {
  const CurveState* s = find_state(d, type);
  if (!s) {
    throw std::invalid_argument(std::string("cost model has no ") + device_name(d) +
                                " curve for type '" + type + "'");
  }
  return s->curve;
}

void CostModel::set_curve(Device d, const std::string& type, const ExpertCurve& c) {
  state(d, type).curve = c;
}

double CostModel::expert_us(Device d, double n_tokens) const {
  return curve(d, weight_type_).predict(n_tokens);
}

double CostModel::expert_us(Device d, const std::string& type, double n_tokens) const {
  return curve(d, type).predict(n_tokens);
}

double CostModel::dense_us(Device d, double bytes, double ops) const {
  return (d == Device::Cpu ? cpu_roof_ : gpu_roof_).predict(bytes, ops);
}

void CostModel::fit(Device d, const std::string& type, const std::vector<Sample>& samples) {
  CurveState& s = state(d, type);
  s.curve = ExpertCurve::fit(samples);
  s.samples = samples;
  if (s.samples.size() > kMaxSamples)
    s.samples.erase(s.samples.begin(), s.samples.end() - kMaxSamples);
}

void CostModel::fit_copy(const std::vector<Sample>& samples) {
  copy_ = CopyCurve::fit(samples);
  copy_samples_ = samples;
}

namespace {

int token_bucket(double n_tokens) {
  return static_cast<int>(std::lround(std::log2(std::max(1.0, n_tokens))));
}

}  // namespace

void CostModel::observe(Device d, double n_tokens, double measured_us) {
  if (!(measured_us > 0.0)) return;  // a zero-length observation carries no information
  CurveState& s = state(d, weight_type_);
  if (s.n_observed == 0 && s.samples.empty()) {
    for (double n = 1; n <= 512; n *= 2) s.prior.push_back({n, s.curve.predict(n)});
  }
  update_error(s.error, s.n_observed, s.curve.predict(n_tokens), measured_us);
  ++s.n_observed;
  const int bucket = token_bucket(n_tokens);
  const auto in_bucket = [bucket](const Sample& x) { return token_bucket(x.x) == bucket; };
  std::erase_if(s.prior, in_bucket);  // observed now: the prior no longer speaks for it
  if (static_cast<size_t>(std::count_if(s.samples.begin(), s.samples.end(), in_bucket)) >=
      kMaxPerBucket) {
    s.samples.erase(std::find_if(s.samples.begin(), s.samples.end(), in_bucket));
  }
  s.samples.push_back({n_tokens, measured_us});
  if (s.n_observed % kRefitEvery == 0) {
    std::vector<Sample> all = s.prior;
    all.insert(all.end(), s.samples.begin(), s.samples.end());
    if (all.size() >= 2) s.curve = ExpertCurve::fit(all);
  }
}

void CostModel::observe_copy(double bytes, double measured_us) {
  if (!(measured_us > 0.0)) return;
  update_error(copy_error_, static_cast<int64_t>(copy_samples_.size()), copy_.predict(bytes),
               measured_us);
  copy_samples_.push_back({bytes, measured_us});
  if (copy_samples_.size() > kMaxSamples) copy_samples_.erase(copy_samples_.begin());
  if (copy_samples_.size() % kRefitEvery == 0) copy_ = CopyCurve::fit(copy_samples_);
}

double CostModel::prediction_error(Device d) const {
  const CurveState* s = find_state(d, weight_type_);
  return s ? s->error : 0.0;
}

int64_t CostModel::n_observed(Device d) const {
  const CurveState* s = find_state(d, weight_type_);
  return s ? s->n_observed : 0;
}

nlohmann::json CostModel::to_json() const {
  using nlohmann::json;
  auto curves = [](const std::map<std::string, CurveState>& m) {
    json j = json::object();
    for (const auto& [type, s] : m) {
      j[type] = {{"overhead_us", s.curve.overhead_us},
                 {"fixed_us", s.curve.fixed_us},
                 {"per_token_us", s.curve.per_token_us}};
      if (!s.curve.points.empty()) {
        json points = json::array();
        for (const Sample& p : s.curve.points) points.push_back({p.x, p.time_us});
        j[type]["points"] = points;
      }
    }
    return j;
  };
  auto roof = [](const Roofline& r) {
    return json{{"bytes_per_us", r.bytes_per_us},
                {"ops_per_us", r.ops_per_us},
                {"overhead_us", r.overhead_us}};
  };
  json j = {{"format", "tandem-cost-profile"},
            {"version", 1},
            {"weight_type", weight_type_},
            {"expert_bytes", expert_bytes_},
            {"has_gpu", has_gpu_},
            {"cpu", {{"experts", curves(cpu_)}, {"roofline", roof(cpu_roof_)}}},
            {"copy", {{"latency_us", copy_.latency_us}, {"us_per_byte", copy_.us_per_byte}}}};
  if (has_gpu_) j["gpu"] = {{"experts", curves(gpu_)}, {"roofline", roof(gpu_roof_)}};
  return j;
}

CostModel CostModel::from_json(const nlohmann::json& j) {
  if (!j.is_object() || j.value("format", "") != "tandem-cost-profile") {
    throw std::invalid_argument("cost profile: \"format\" must be \"tandem-cost-profile\"");
  }
  CostModel m;
  m.weight_type_ = j.value("weight_type", "");
  if (m.weight_type_.empty()) throw std::invalid_argument("cost profile: weight_type is missing");
  m.expert_bytes_ = get_number(j, "expert_bytes", "profile");
  m.has_gpu_ = j.value("has_gpu", false);
  auto read_device = [&](const char* key, Device d, Roofline& roof) {
    if (!j.contains(key) || !j[key].is_object()) {
      throw std::invalid_argument(std::string("cost profile: \"") + key + "\" section is missing");
    }
    const nlohmann::json& dj = j[key];
    const std::string where = key;
    if (!dj.contains("experts") || !dj["experts"].is_object() || !dj.contains("roofline")) {
      throw std::invalid_argument("cost profile: " + where + " needs experts and roofline");
    }
    for (auto it = dj["experts"].begin(); it != dj["experts"].end(); ++it) {
      const std::string w = where + ".experts." + it.key();
      ExpertCurve& curve = m.state(d, it.key()).curve;
      curve = {get_number(*it, "overhead_us", w), get_number(*it, "fixed_us", w),
               get_number(*it, "per_token_us", w)};
      if (it->contains("points")) {
        const nlohmann::json& points = (*it)["points"];
        if (!points.is_array())
          throw std::invalid_argument("cost profile: " + w + ".points must be an array");
        for (const nlohmann::json& p : points) {
          if (!p.is_array() || p.size() != 2 || !p[0].is_number() || !p[1].is_number() ||
              p[1].get<double>() <= 0 ||
              (!curve.points.empty() && p[0].get<double>() <= curve.points.back().x)) {
            throw std::invalid_argument(
                "cost profile: " + w +
                ".points must be [tokens, us] pairs with increasing tokens and positive times");
          }
          curve.points.push_back({p[0].get<double>(), p[1].get<double>()});
        }
      }
    }
    roof = {get_number(dj["roofline"], "bytes_per_us", where + ".roofline"),
            get_number(dj["roofline"], "ops_per_us", where + ".roofline"),
            get_number(dj["roofline"], "overhead_us", where + ".roofline")};
  };
  read_device("cpu", Device::Cpu, m.cpu_roof_);
  if (m.has_gpu_) read_device("gpu", Device::Gpu, m.gpu_roof_);
  if (j.contains("copy")) {
    m.copy_ = {get_number(j["copy"], "latency_us", "copy"),
               get_number(j["copy"], "us_per_byte", "copy")};
  }
  m.curve(Device::Cpu, m.weight_type_);  // throws when the main type has no curve
  if (m.has_gpu_) m.curve(Device::Gpu, m.weight_type_);
  return m;
}

}  // namespace tandem::sched
