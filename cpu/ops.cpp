#include "cpu/ops.h"

#include <cmath>
#include <vector>

#include "cpu/cpu_features.h"
#include "cpu/half.h"

namespace tandem {

void swiglu_avx512(const float* gate, const float* up, int64_t n, float* out);  // cpu/avx512/
void to_fp16_row_avx512(const float* x, int64_t n, uint16_t* out);              // cpu/avx512/
void round_fp16_row_avx512(const float* x, int64_t n, float* out);              // cpu/avx512/

namespace {

// Sum of x[i]^2 in double, as ggml sums it. Eight partial sums instead of one chain: the
// chain's add latency made the norms (~50 of 2048 values and ~580 per-head norms of 128 per
// decode step) about 1% of a step. The reordering moves the double sum by ~1e-16 relative,
// far below the float the mean is then rounded to.
double sum_of_squares(const float* x, int64_t n) {
  double part[8] = {};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int k = 0; k < 8; ++k) part[k] += static_cast<double>(x[i + k] * x[i + k]);
  }
  double sum =
      ((part[0] + part[1]) + (part[2] + part[3])) + ((part[4] + part[5]) + (part[6] + part[7]));
  for (; i < n; ++i) sum += static_cast<double>(x[i] * x[i]);
  return sum;
}

}  // namespace

void rms_norm(const float* x, const float* w, int64_t n, float eps, float* y) {
  const double sum = sum_of_squares(x, n);
  const float mean = static_cast<float>(sum / static_cast<double>(n));
  const float scale = 1.0f / std::sqrt(mean + eps);
  // Two roundings (normalise, then weight) as ggml's separate rms_norm and mul ops do.
  for (int64_t i = 0; i < n; ++i) {
    const float v = x[i] * scale;
    y[i] = w ? v * w[i] : v;
  }
}

void rope_angles(int64_t n_rot, int32_t pos, float freq_base, float freq_scale, float* cos_sin) {
  const float theta_scale = std::pow(freq_base, -2.0f / static_cast<float>(n_rot));
  float theta = static_cast<float>(pos);
  for (int64_t i = 0; i < n_rot / 2; ++i) {
    const float angle = freq_scale * theta;
    cos_sin[2 * i] = std::cos(angle);
    cos_sin[2 * i + 1] = std::sin(angle);
    theta *= theta_scale;
  }
}

void rope_rotate(float* head, int64_t n_rot, const float* cos_sin, bool neox) {
  const int64_t half = n_rot / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float c = cos_sin[2 * i], s = cos_sin[2 * i + 1];
    float* a = neox ? head + i : head + 2 * i;
    float* b = neox ? head + i + half : head + 2 * i + 1;
    const float x0 = *a, x1 = *b;
    *a = x0 * c - x1 * s;
    *b = x0 * s + x1 * c;
  }
}

void rope(float* head, int64_t n_rot, int32_t pos, float freq_base, float freq_scale, bool neox) {
  std::vector<float> cos_sin(static_cast<size_t>(n_rot));
  rope_angles(n_rot, pos, freq_base, freq_scale, cos_sin.data());
  rope_rotate(head, n_rot, cos_sin.data(), neox);
}

void softmax(float* x, int64_t n) {
  float max = -INFINITY;
  for (int64_t i = 0; i < n; ++i) max = x[i] > max ? x[i] : max;
  double sum = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    x[i] = std::exp(x[i] - max);
    sum += x[i];
  }
  const float inv = static_cast<float>(1.0 / sum);
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}

float silu(float x) { return x / (1.0f + std::exp(-x)); }

void swiglu_ref(const float* gate, const float* up, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = silu(gate[i]) * up[i];
}

void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  static const auto chosen = cpu_features().has_avx512_kernels() ? swiglu_avx512 : swiglu_ref;
  chosen(gate, up, n, out);
}

void to_fp16_row_ref(const float* x, int64_t n, uint16_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = fp32_to_fp16(x[i]);
}

void to_fp16_row(const float* x, int64_t n, uint16_t* out) {
  static const auto chosen =
      cpu_features().has_avx512_kernels() ? to_fp16_row_avx512 : to_fp16_row_ref;
  chosen(x, n, out);
}

void round_fp16_row_ref(const float* x, int64_t n, float* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = round_fp16(x[i]);
}

void round_fp16_row(const float* x, int64_t n, float* out) {
  static const auto chosen =
      cpu_features().has_avx512_kernels() ? round_fp16_row_avx512 : round_fp16_row_ref;
  chosen(x, n, out);
}

}  // namespace tandem
