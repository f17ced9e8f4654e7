// The accelerator the hybrid parity tests run on: the sim by default; CUDA device N when
// TANDEM_TEST_CUDA_DEVICE=N is set, so the same golden comparisons check the CUDA backend on a
// machine with a GPU (CI has none and runs them on the sim).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
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

// Largest |a - b| of each logit row, prompt rows then decode rows.
inline std::vector<float> row_max_differences(const LogitCase& a, const LogitCase& b) {
  std::vector<float> out;
  const auto rows = [&out](const std::vector<std::vector<float>>& x,
                           const std::vector<std::vector<float>>& y) {
    for (size_t r = 0; r < x.size() && r < y.size(); ++r) {
      float d = 0;
      for (size_t v = 0; v < x[r].size() && v < y[r].size(); ++v)
        d = std::max(d, std::fabs(x[r][v] - y[r][v]));
      out.push_back(d);
    }
  };
  rows(a.prompt_logits, b.prompt_logits);
  rows(a.decode_logits, b.decode_logits);
  return out;
}

// Runs cases on the CPU-only engine, then on the accelerated one, and compares.
// The sim computes with the CPU's kernels: the same greedy tokens and logits within 1e-4.
// A GPU sums in another order (warp reductions, cuBLAS); measured on an H200, its logits stay
// within ~5e-7 of the CPU's, except that with random-weight routers such a difference can pick
// another expert where two router scores nearly tie (golden data: ties within 2e-6; a flip
// moves its row by up to ~0.2 and later rows by ~0.01-0.02 through attention). So the GPU run
// is fed the CPU's tokens (teacher forcing); each case's rows must stay within 1e-4 up to a
// flip, the flip row within 0.25 and the rows after it within 0.05; and at most one case in
// four (at least one allowed) may flip, which a wrong kernel, off from the first row of every
// case, does not pass. Each GPU case prints its rows' differences.
class AcceleratedParity {
 public:
  AcceleratedParity(Engine& cpu, Engine& accelerated) : cpu_(cpu), accelerated_(accelerated) {}
  ~AcceleratedParity() {
    EXPECT_LE(4 * flipped_, std::max<size_t>(4, cases_))
        << flipped_ << " of " << cases_ << " cases flipped a routing decision";
  }
  AcceleratedParity(const AcceleratedParity&) = delete;
  AcceleratedParity& operator=(const AcceleratedParity&) = delete;

  void run(const std::vector<int32_t>& prompt, int32_t n_steps) {
    const LogitCase a = run_logit_case(cpu_, 0, prompt, nullptr, n_steps);
    if (parity_cuda_device() < 0) {
      expect_same_logit_case(a, run_logit_case(accelerated_, 0, prompt, nullptr, n_steps), 1e-4f);
      return;
    }
    const LogitCase b = run_logit_case(accelerated_, 0, prompt, &a.fed, n_steps);
    ASSERT_EQ(a.prompt_logits.size(), b.prompt_logits.size());
    ASSERT_EQ(a.decode_logits.size(), b.decode_logits.size());
    const std::vector<float> diffs = row_max_differences(a, b);
    ++cases_;
    size_t flip = diffs.size();
    std::string line = "[ parity ] rows' max |diff|:";
    for (size_t r = 0; r < diffs.size(); ++r) {
      if (flip == diffs.size() && diffs[r] > 1e-4f) flip = r;
      const float limit = r < flip ? 1e-4f : r == flip ? 0.25f : 0.05f;
      EXPECT_LE(diffs[r], limit) << "row " << r << (r > flip ? ", after a routing flip" : "");
      char buf[16];
      std::snprintf(buf, sizeof buf, " %.1e", static_cast<double>(diffs[r]));
      line += buf;
    }
    flipped_ += flip < diffs.size();
    std::printf("%s\n", line.c_str());
  }

 private:
  Engine& cpu_;
  Engine& accelerated_;
  size_t cases_ = 0, flipped_ = 0;
};

}  // namespace tandem::test
