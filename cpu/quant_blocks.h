// Byte layouts of ggml's quantized blocks, shared by the reference code (cpu/quant*.cpp) and the
// SIMD kernels. Field order and sizes match ggml-common.h so GGUF data is read in place.
#pragma once

#include <cstdint>

namespace tandem {

constexpr int kQK = 32;    // elements per block of the 32-element formats
constexpr int kQKK = 256;  // elements per K-quant super-block

struct BlockQ4_0 {
  uint16_t d;           // f16 scale
  uint8_t qs[kQK / 2];  // element j in the low nibble of qs[j], element j+16 in the high nibble
};
struct BlockQ4_1 {
  uint16_t d, m;  // f16 scale and minimum: x = q * d + m
  uint8_t qs[kQK / 2];
};
struct BlockQ5_0 {
  uint16_t d;
  uint8_t qh[4];  // bit j = fifth bit of element j (32 bits, little endian)
  uint8_t qs[kQK / 2];
};
struct BlockQ5_1 {
  uint16_t d, m;
  uint8_t qh[4];
  uint8_t qs[kQK / 2];
};
struct BlockQ8_0 {
  uint16_t d;
  int8_t qs[kQK];
};
struct BlockQ8_1 {
  uint16_t d;  // f16 scale
  uint16_t s;  // f16 of d * sum(qs): lets q4_1/q5_1 dots apply their minimum once per block
  int8_t qs[kQK];
};
// 8 sub-blocks of 32; each has a 6-bit scale and a 6-bit min packed into `scales`.
struct BlockQ4K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qs[kQKK / 2];  // per 64 elements: 32 bytes, low nibbles first 32, high nibbles next 32
};
struct BlockQ5K {
  uint16_t d, dmin;
  uint8_t scales[12];
  uint8_t qh[kQKK / 8];  // bit 2i / 2i+1 of qh[l]: fifth bit of element l of chunk i (low / high)
  uint8_t qs[kQKK / 2];
};
// 16 sub-blocks of 16 with int8 scales; 6-bit quants split into 4 low bits and 2 high bits.
struct BlockQ6K {
  uint8_t ql[kQKK / 2];
  uint8_t qh[kQKK / 4];
  int8_t scales[kQKK / 16];
  uint16_t d;
};
struct BlockQ8K {
  float d;
  int8_t qs[kQKK];
  int16_t bsums[kQKK / 16];  // sums of each 16 quants, for the K-quants' min terms
};
struct BlockMxfp4 {
  uint8_t e;  // E8M0 shared exponent
  uint8_t qs[kQK / 2];
};

static_assert(sizeof(BlockQ4_0) == 18 && sizeof(BlockQ4_1) == 20);
static_assert(sizeof(BlockQ5_0) == 22 && sizeof(BlockQ5_1) == 24);
static_assert(sizeof(BlockQ8_0) == 34 && sizeof(BlockQ8_1) == 36);
static_assert(sizeof(BlockQ4K) == 144 && sizeof(BlockQ5K) == 176 && sizeof(BlockQ6K) == 210);
static_assert(sizeof(BlockQ8K) == 292 && sizeof(BlockMxfp4) == 17);

// e2m1 values times two (so they are integers); the block's E8M0 scale is halved to match.
inline constexpr int8_t kMxfp4Values[16] = {0, 1,  2,  3,  4,  6,  8,  12,
                                            0, -1, -2, -3, -4, -6, -8, -12};

// 2^(e-127) / 2, the MXFP4 block scale paired with kMxfp4Values. e < 2 gives a subnormal.
static inline float e8m0_to_fp32_half(uint8_t e) {
  const uint32_t bits = e < 2 ? (0x00200000u << e) : (static_cast<uint32_t>(e - 1) << 23);
  float f;
  __builtin_memcpy(&f, &bits, sizeof f);
  return f;
}

// Unpacks the 6-bit scale and min of sub-block j (0..7) of a Q4_K / Q5_K block.
static inline void k4_scale_min(int j, const uint8_t* q, uint8_t* sc, uint8_t* m) {
  if (j < 4) {
    *sc = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *sc = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

// (static: these headers are also compiled into the AVX-512 files; keep each copy local.)
// Round to nearest, ties to even, for |f| < 2^22 (the magic-number trick ggml's quantizers use).
static inline int nearest_int(float f) {
  const float v = f + 12582912.f;
  int32_t i;
  __builtin_memcpy(&i, &v, sizeof i);
  return (i & 0x007fffff) - 0x00400000;
}

}  // namespace tandem
