// Helpers for the serve/batcher tests: a tiny model generated once per test process.
#pragma once

#include <fcntl.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "tests/test_support.h"

namespace tandem::test {

// A few-MB random-weight model: `tandem gen-model --preset tiny` into a temp dir, or the shared
// reference model when gen-model is unavailable; "" when neither exists.
inline std::string tiny_model_path() {
  static const TempDir temp("tandem-srv-test-");
  static const std::string path = [] {
    const std::string& dir = temp.path();
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

#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>

#include <chrono>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

namespace tandem::test {

// The tandem binary under test (TANDEM_TEST_BINARY overrides the build's).
inline std::string tandem_binary() {
  if (const char* b = std::getenv("TANDEM_TEST_BINARY"); b && *b) return b;
  return TANDEM_BINARY;
}

// `tandem serve` as a child process on a free loopback port (--port 0; the port is read from
// its log). The destructor kills it if a test did not stop it.
class ServeProcess {
 public:
  ServeProcess(const std::string& config_json, const std::vector<std::string>& extra_args)
      : dir_("tandem-serve-test-") {
    log_path_ = dir_.path() + "/serve.log";
    const std::string config_path = dir_.path() + "/config.json";
    std::ofstream(config_path) << config_json;
    // The log exists and is empty before the child starts: wait_for_port reads it at once.
    std::ofstream(log_path_).flush();
    std::vector<std::string> args = {tandem_binary(), "serve", "-c", config_path, "--port", "0"};
    args.insert(args.end(), extra_args.begin(), extra_args.end());
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_path_.c_str(), O_WRONLY | O_APPEND);
      ::dup2(fd, 2);
      ::dup2(fd, 1);
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
      ::_exit(127);
    }
  }
  ~ServeProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  ServeProcess(const ServeProcess&) = delete;
  ServeProcess& operator=(const ServeProcess&) = delete;

  // Waits for "listening on http://host:PORT" in the log; 0 on timeout or early exit.
  int wait_for_port(std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < end) {
      const std::string text = log();
      const size_t at = text.find("listening on http://");
      if (at != std::string::npos) {
        const size_t colon = text.find(':', at + 20);
        const size_t eol = text.find('\n', colon);
        if (colon != std::string::npos && eol != std::string::npos) {
          return std::stoi(text.substr(colon + 1, eol - colon - 1));
        }
      }
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return 0;
  }
  // Waits for the port, then for /health to answer 200 (503 while the model loads); the port,
  // or 0 when either did not happen in `timeout`. Sanitizer builds on a loaded CI machine can
  // take many seconds to load, so callers give generous timeouts.
  int wait_until_healthy(std::chrono::seconds timeout) {
    const auto end = std::chrono::steady_clock::now() + timeout;
    const int port = wait_for_port(timeout);
    if (port == 0) return 0;
    httplib::Client c("127.0.0.1", port);
    c.set_connection_timeout(5, 0);
    c.set_read_timeout(5, 0);
    while (std::chrono::steady_clock::now() < end) {
      auto r = c.Get("/health");
      if (r && r->status == 200) return port;
      if (::waitpid(pid_, nullptr, WNOHANG) == pid_) {
        pid_ = -1;
        return 0;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return 0;
  }
  std::string log() const {
    std::ifstream f(log_path_);
    std::stringstream s;
    s << f.rdbuf();
    return s.str();
  }
  // Sends `sig` and waits for the exit; the exit code, or -1 when it did not exit normally.
  int signal_and_wait(int sig) {
    ::kill(pid_, sig);
    int status = 0;
    ::waitpid(pid_, &status, 0);
    pid_ = -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }

 private:
  TempDir dir_;
  pid_t pid_ = -1;
  std::string log_path_;
};

}  // namespace tandem::test
