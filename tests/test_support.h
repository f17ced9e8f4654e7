// Where tests find the reference data (../shared): TANDEM_SHARED_DIR, else the build's default;
// fresh temporary directories.
#pragma once

#include <stdlib.h>  // mkdtemp

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <random>
#include <stdexcept>
#include <string>
#include <system_error>
#include <vector>

namespace tandem::test {

// n floats drawn uniformly from [-scale, scale].
inline std::vector<float> random_floats(std::mt19937& rng, int64_t n, float scale = 1.0f) {
  std::uniform_real_distribution<float> dist(-scale, scale);
  std::vector<float> v(static_cast<size_t>(n));
  for (float& x : v) x = dist(rng);
  return v;
}

inline std::string shared_dir() {
  if (const char* env = std::getenv("TANDEM_SHARED_DIR"); env && *env) return env;
  return TANDEM_DEFAULT_SHARED_DIR;
}

inline bool have_shared() { return std::filesystem::is_directory(shared_dir() + "/models"); }

inline std::string shared_path(const std::string& relative) { return shared_dir() + "/" + relative; }

// A fresh directory under the system temp dir (mkdtemp: never one an earlier process left
// behind, which a name built from the pid can be once pids wrap), removed on destruction.
class TempDir {
 public:
  explicit TempDir(const std::string& prefix) {
    std::string tmpl = std::filesystem::temp_directory_path().string() + "/" + prefix + "XXXXXX";
    if (::mkdtemp(tmpl.data()) == nullptr) throw std::runtime_error("mkdtemp failed: " + tmpl);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ignored;
    std::filesystem::remove_all(path_, ignored);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::string& path() const { return path_; }

 private:
  std::string path_;
};

}  // namespace tandem::test

// Skips the current test when the reference data is absent.
#define TANDEM_REQUIRE_SHARED()                                                              \
  do {                                                                                       \
    if (!::tandem::test::have_shared()) {                                                    \
      GTEST_SKIP() << "reference data not found at " << ::tandem::test::shared_dir()         \
                   << " (set TANDEM_SHARED_DIR)";                                            \
    }                                                                                        \
  } while (0)
