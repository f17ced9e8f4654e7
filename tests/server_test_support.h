// Helpers for the serve/batcher tests: a tiny model generated once per test process.
#pragma once

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/test_support.h"

namespace tandem::test {

// A few-MB random-weight model: `tandem gen-model --preset tiny` into a temp dir, or the shared
// reference model when gen-model is unavailable; "" when neither exists.
inline std::string tiny_model_path() {
  static const std::string path = [] {
    const std::string dir = std::filesystem::temp_directory_path().string() + "/tandem-srv-test-" +
                            std::to_string(::getpid());
    std::filesystem::create_directories(dir);
    const std::string out = dir + "/tiny-qwen3moe-q8_0.gguf";
    const std::string cmd = std::string(TANDEM_BINARY) +
                            " gen-model --preset tiny --arch qwen3moe --type q8_0 -o " + out +
                            " > " + dir + "/gen-model.log 2>&1";
    if (std::system(cmd.c_str()) == 0 && std::filesystem::exists(out)) return out;
    const std::string shared = shared_path("models/tiny-qwen3moe-q8_0.gguf");
    return std::filesystem::exists(shared) ? shared : std::string();
  }();
  return path;
}

}  // namespace tandem::test

#define TANDEM_REQUIRE_TINY_MODEL()                                                          \
  do {                                                                                       \
    if (::tandem::test::tiny_model_path().empty()) {                                         \
      GTEST_SKIP() << "no tiny model: `tandem gen-model` failed and no shared model exists"; \
    }                                                                                        \
  } while (0)
