// Scalar conversions between float and the 16-bit float formats. Usable from host and device
// code (the CUDA kernels include this header), so no intrinsics here.
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TANDEM_HD __host__ __device__
#else
#define TANDEM_HD
#endif

namespace tandem {

TANDEM_HD inline uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

TANDEM_HD inline float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

// IEEE half -> float, exact for every input including subnormals, inf and NaN.
TANDEM_HD inline float fp16_to_fp32(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000) << 16;
  const uint32_t exp = (h >> 10) & 0x1f;
  uint32_t mant = h & 0x3ff;
  if (exp == 0x1f) return bits_float(sign | 0x7f800000u | (mant << 13));
  if (exp == 0) {
    if (mant == 0) return bits_float(sign);
    // Subnormal: value = mant * 2^-24.
    float v = static_cast<float>(mant) * (1.0f / 16777216.0f);
    return sign ? -v : v;
  }
  return bits_float(sign | ((exp + 112) << 23) | (mant << 13));
}

// float -> IEEE half with round-to-nearest-even (what F16C's vcvtps2ph does by default).
TANDEM_HD inline uint16_t fp32_to_fp16(float f) {
  const uint32_t x = float_bits(f);
  const uint32_t sign = (x >> 16) & 0x8000;
  const uint32_t abs = x & 0x7fffffff;
  if (abs >= 0x7f800000u) {  // inf or NaN
    return static_cast<uint16_t>(sign | 0x7c00 | (abs > 0x7f800000u ? 0x200 : 0));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00);  // rounds to inf
  if (abs < 0x38800000u) {                                                // subnormal or zero
    // Add 0.5 to shift the mantissa into place and let the FPU round to nearest even.
    const float shifted = bits_float(abs) + 0.5f;
    return static_cast<uint16_t>(sign | (float_bits(shifted) - 0x3f000000u));
  }
  const uint32_t mant_odd = (abs >> 13) & 1;
  const uint32_t rounded = abs + 0xc8000fffu + mant_odd;  // rebias exponent and round
  return static_cast<uint16_t>(sign | (rounded >> 13));
}

TANDEM_HD inline float bf16_to_fp32(uint16_t h) { return bits_float(static_cast<uint32_t>(h) << 16); }

// float -> bfloat16 with round-to-nearest-even; NaN stays NaN (ggml's rule).
TANDEM_HD inline uint16_t fp32_to_bf16(float f) {
  uint32_t u = float_bits(f);
  if ((u & 0x7fffffff) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 64);
  return static_cast<uint16_t>((u + (0x7fff + ((u >> 16) & 1))) >> 16);
}

// Rounding a float through a 16-bit format and back: how llama.cpp's matmuls see activations.
TANDEM_HD inline float round_fp16(float f) { return fp16_to_fp32(fp32_to_fp16(f)); }
TANDEM_HD inline float round_bf16(float f) { return bf16_to_fp32(fp32_to_bf16(f)); }

}  // namespace tandem
