// Predicted times of the work one MoE layer consists of, per device and weight type:
//   expert(n tokens) = overhead + max(fixed, per_token * n)   (weights streamed once: the
//                      bandwidth-bound `fixed` part dominates at few tokens, arithmetic at many)
//   copy(bytes)      = latency + bytes * us_per_byte          (one serial PCIe channel)
// Curves start from the hardware profile's roofline, can be fitted to measured samples (least
// squares on relative error), refit online from observed times, and persist as profile JSON.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "scheduler/hardware.h"
#include "scheduler/model_shape.h"

namespace tandem::sched {

enum class Device { Cpu, Gpu };
const char* device_name(Device d);

struct Sample {
  double x = 0.0;        // tokens (expert curves) or bytes (copy curve)
  double time_us = 0.0;  // measured
};

struct ExpertCurve {
  double overhead_us = 0.0;
  double fixed_us = 0.0;
  double per_token_us = 0.0;
  // Measured (tokens, time) points, sorted by tokens. When present they replace the formula:
  // piecewise-linear between points, flat below the first, the last slope beyond the last.
  // A CPU whose kernels change at some token count (row kernels below it, blocked above) is
  // followed where no three-parameter curve can be (tandem calibrate).
  std::vector<Sample> points;
  double predict(double n_tokens) const;
  // A curve through the median time of each token count in `samples`. Throws
  // std::invalid_argument with fewer than two distinct token counts or a non-positive time.
  static ExpertCurve interpolate(const std::vector<Sample>& samples);
  // Least squares on relative error over piecewise fits (flat below a kink, linear above).
  // Throws std::invalid_argument with fewer than two samples or a non-positive time.
  static ExpertCurve fit(const std::vector<Sample>& samples);
};

struct CopyCurve {
  double latency_us = 0.0;
  double us_per_byte = 0.0;
  double predict(double bytes) const { return latency_us + bytes * us_per_byte; }
  static CopyCurve fit(const std::vector<Sample>& samples);
};

// Peak rates a device reaches (after efficiency factors), for work with no fitted curve.
struct Roofline {
  double bytes_per_us = 0.0;
  double ops_per_us = 0.0;   // at the model's weight class
  double overhead_us = 0.0;  // per kernel
  double predict(double bytes, double ops) const;
};

class CostModel {
 public:
  CostModel() = default;
  // The analytic model of `shape` on `hw` (GPU curves only when hw has a GPU).
  static CostModel from_hardware(const HardwareSpec& hw, const ModelShape& shape);

  bool has_gpu() const { return has_gpu_; }
  const std::string& weight_type() const { return weight_type_; }
  double expert_bytes() const { return expert_bytes_; }
  double expert_us(Device d, double n_tokens) const;
  double expert_us(Device d, const std::string& type, double n_tokens) const;
  double copy_us(double bytes) const { return copy_.predict(bytes); }
  double expert_copy_us() const { return copy_.predict(expert_bytes_); }
  // Work with no fitted curve (attention, shared expert, output head): roofline prediction.
  double dense_us(Device d, double bytes, double ops) const;

  const ExpertCurve& curve(Device d, const std::string& type) const;
  void set_curve(Device d, const std::string& type, const ExpertCurve& c);
  const CopyCurve& copy_curve() const { return copy_; }
  void set_copy_curve(const CopyCurve& c) { copy_ = c; }

  // Replaces a curve by a fit to samples (and keeps them for later online refits).
  void fit(Device d, const std::string& type, const std::vector<Sample>& samples);
  void fit_copy(const std::vector<Sample>& samples);
  // Records an observed time: updates the EWMA of relative prediction error and refits the
  // curve from its recent samples every `kRefitEvery` observations. Samples are kept per
  // token-count bucket (powers of two, the newest kMaxPerBucket each), so a long run of
  // one-token decode steps cannot push out what prompts taught about many tokens; buckets
  // never observed keep the curve's earlier shape (its value at 1, 2, 4, ... 512 tokens).
  void observe(Device d, double n_tokens, double measured_us);
  void observe_copy(double bytes, double measured_us);
  // EWMA of |predicted - observed| / observed; 0 before any observation.
  double prediction_error(Device d) const;
  double copy_prediction_error() const { return copy_error_; }
  int64_t n_observed(Device d) const;

  nlohmann::json to_json() const;
  // Throws std::invalid_argument naming the field that is missing or malformed.
  static CostModel from_json(const nlohmann::json& j);

  static constexpr int kRefitEvery = 32;
  static constexpr size_t kMaxSamples = 512;   // samples kept by fit()
  static constexpr size_t kMaxPerBucket = 64;  // samples kept per token bucket by observe()
  static constexpr double kErrorAlpha = 0.05;

 private:
  struct CurveState {
    ExpertCurve curve;
    std::vector<Sample> samples;
    std::vector<Sample> prior;  // the curve before the first observation, one per bucket
    double error = 0.0;
    int64_t n_observed = 0;
  };
  CurveState& state(Device d, const std::string& type);
  const CurveState* find_state(Device d, const std::string& type) const;

  bool has_gpu_ = false;
  std::string weight_type_;
  double expert_bytes_ = 0.0;
  std::map<std::string, CurveState> cpu_, gpu_;
  Roofline cpu_roof_, gpu_roof_;
  CopyCurve copy_;
  std::vector<Sample> copy_samples_;
  double copy_error_ = 0.0;
};

}  // namespace tandem::sched
