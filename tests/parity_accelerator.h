// The accelerator the hybrid parity tests run on: the sim by default; CUDA device N when
// TANDEM_TEST_CUDA_DEVICE=N is set, so the same golden comparisons check the CUDA backend on a
// machine with a GPU (CI has none and runs them on the sim).
#pragma once

#include <cstdint>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include "engine/engine.h"
#include "engine/logit_case.h"
#include "engine/trace.h"
#include "gpu/accelerator.h"
#include "gpu/cuda_accelerator.h"
#include "gpu/hardware_profile.h"
#include "gpu/sim_accelerator.h"
#include "tests/logit_case_compare.h"

namespace tandem::test {

// -1 when the parity tests use the sim.
inline int parity_cuda_device() {
  const char* env = std::getenv("TANDEM_TEST_CUDA_DEVICE");
  return env && *env ? std::atoi(env) : -1;
}

inline const char* parity_accelerator_name() {
  return parity_cuda_device() < 0 ? "sim" : "cuda";
}

// `bytes` of device memory; `trace` records the sim's device ops (the CUDA backend records
// none).
inline std::unique_ptr<Accelerator> make_parity_accelerator(const HardwareProfile& profile,
                                                            uint64_t bytes, TraceRecorder* trace) {
  const int device = parity_cuda_device();
  if (device < 0) return make_sim_accelerator(profile, bytes, trace);
  return make_cuda_accelerator(device, bytes);
}

// Runs `prompt` and n_steps tokens on the CPU-only engine, then on the accelerated one, and
// compares. The sim computes with the CPU's kernels: the same greedy tokens and logits within
// 1e-4. A GPU sums blocks in another order (warp reductions, cuBLAS): measured up to 1.8e-4
// apart on the tiny Q4_K_M model (H200), and the golden files have top-2 gaps of 2e-5, so it is
// fed the CPU's tokens (teacher forcing) and held to 1e-3.
inline void expect_accelerated_parity(Engine& cpu, Engine& accelerated,
                                      const std::vector<int32_t>& prompt, int32_t n_steps) {
  const LogitCase a = run_logit_case(cpu, 0, prompt, nullptr, n_steps);
  const bool on_sim = parity_cuda_device() < 0;
  const LogitCase b = run_logit_case(accelerated, 0, prompt, on_sim ? nullptr : &a.fed, n_steps);
  expect_same_logit_case(a, b, on_sim ? 1e-4f : 1e-3f);
}

}  // namespace tandem::test
