// Where tests find the reference data (../shared): TANDEM_SHARED_DIR, else the build's default;
// fresh temporary directories; the tandem binary run as a user runs it.
#pragma once

#include <stdlib.h>    // mkdtemp
#include <sys/wait.h>  // WIFEXITED
#include <unistd.h>    // getpid

#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
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

inline std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), {}};
}

// What `tandem ARGS` did: its exit code (-1 when it did not exit), stdout and stderr.
struct CliResult {
  int exit_code = -1;
  std::string out, err;
};

// Runs the tandem binary with `args` (the tail of a shell command line); its output passes
// through two files in `scratch_dir` named after this process, removed afterwards.
inline CliResult run_tandem(const std::string& args, const std::string& scratch_dir) {
  const std::string base = scratch_dir + "/tandem-cli-" + std::to_string(::getpid());
  const std::string out = base + ".out", err = base + ".err";
  const int status =
      std::system((std::string(TANDEM_BINARY) + " " + args + " >" + out + " 2>" + err).c_str());
  CliResult r{WIFEXITED(status) ? WEXITSTATUS(status) : -1, slurp(out), slurp(err)};
  std::error_code ignored;
  std::filesystem::remove(out, ignored);
  std::filesystem::remove(err, ignored);
  return r;
}

}  // namespace tandem::test

// Skips the current test when the reference data is absent.
#define TANDEM_REQUIRE_SHARED()                                                              \
  do {                                                                                       \
    if (!::tandem::test::have_shared()) {                                                    \
      GTEST_SKIP() << "reference data not found at " << ::tandem::test::shared_dir()         \
                   << " (set TANDEM_SHARED_DIR)";                                            \
    }                                                                                        \
  } while (0)
