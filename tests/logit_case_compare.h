// Test helper: two runs of the same teacher-forced case must feed the same greedy tokens and
// give logits within `tolerance`, prompt and decode rows alike.
#pragma once

#include <gtest/gtest.h>

#include "engine/logit_case.h"

namespace tandem::test {

inline void expect_same_logit_case(const LogitCase& a, const LogitCase& b, float tolerance) {
  EXPECT_EQ(a.fed, b.fed) << "greedy tokens differ";
  for (size_t r = 0; r < a.prompt_logits.size(); ++r) {
    for (size_t v = 0; v < a.prompt_logits[r].size(); ++v) {
      ASSERT_NEAR(a.prompt_logits[r][v], b.prompt_logits[r][v], tolerance) << "prompt row " << r;
    }
  }
  for (size_t r = 0; r < a.decode_logits.size(); ++r) {
    for (size_t v = 0; v < a.decode_logits[r].size(); ++v) {
      ASSERT_NEAR(a.decode_logits[r][v], b.decode_logits[r][v], tolerance) << "decode row " << r;
    }
  }
}

}  // namespace tandem::test
