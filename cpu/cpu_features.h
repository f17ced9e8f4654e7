// Instruction-set extensions of the running CPU, detected once; kernels are chosen from these.
#pragma once

#include <string>

namespace tandem {

struct CpuFeatures {
  bool avx2 = false;
  bool fma = false;
  bool f16c = false;
  bool avx512f = false;
  bool avx512bw = false;
  bool avx512dq = false;
  bool avx512vl = false;
  bool avx512vnni = false;
  bool avx512bf16 = false;

  // Everything cpu/avx512/*.cpp is compiled for.
  bool has_avx512_kernels() const {
    return avx512f && avx512bw && avx512dq && avx512vl && avx512vnni && fma && f16c && avx2;
  }
  bool has_avx2_kernels() const { return avx2 && fma && f16c; }
  std::string to_string() const;  // "avx2 fma f16c avx512f ..."
};

// Features of this CPU. Setting TANDEM_CPU_KERNELS=avx2 or =scalar in the environment masks
// the wider sets (for benchmarks and for testing the fallbacks on a wide machine).
const CpuFeatures& cpu_features();

// Raw detection, ignoring the environment override.
CpuFeatures detect_cpu_features();

}  // namespace tandem
