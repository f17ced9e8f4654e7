// Where tests find the reference data (../shared): TANDEM_SHARED_DIR, else the build's default.
#pragma once

#include <cstdlib>
#include <filesystem>
#include <string>

namespace tandem::test {

inline std::string shared_dir() {
  if (const char* env = std::getenv("TANDEM_SHARED_DIR"); env && *env) return env;
  return TANDEM_DEFAULT_SHARED_DIR;
}

inline bool have_shared() { return std::filesystem::is_directory(shared_dir() + "/models"); }

inline std::string shared_path(const std::string& relative) { return shared_dir() + "/" + relative; }

}  // namespace tandem::test

// Skips the current test when the reference data is absent.
#define TANDEM_REQUIRE_SHARED()                                                              \
  do {                                                                                       \
    if (!::tandem::test::have_shared()) {                                                    \
      GTEST_SKIP() << "reference data not found at " << ::tandem::test::shared_dir()         \
                   << " (set TANDEM_SHARED_DIR)";                                            \
    }                                                                                        \
  } while (0)
