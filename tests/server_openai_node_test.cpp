// Drives `tandem serve` with the official `openai` npm package (tests/integration). The package
// is installed on first run with npm into tests/integration/node_modules; without node, npm or
// network the test skips and says why.
#include <gtest/gtest.h>
#include <httplib.h>

#include "tests/server_test_support.h"

namespace tandem {
namespace {

using namespace std::chrono_literals;

std::string integration_dir() {
  return std::string(TANDEM_SOURCE_DIR) + "/tests/integration";
}

// "" when the openai package is ready, else why not.
std::string ensure_openai_package() {
  if (std::system("node --version > /dev/null 2>&1") != 0) return "node is not installed";
  const std::string dir = integration_dir();
  if (std::filesystem::exists(dir + "/node_modules/openai/package.json")) return "";
  if (std::system("npm --version > /dev/null 2>&1") != 0) return "npm is not installed";
  const std::string cmd =
      "cd '" + dir +
      "' && timeout 180 npm install --no-audit --no-fund --loglevel=error > /dev/null 2>&1";
  if (std::system(cmd.c_str()) != 0)
    return "`npm install` failed (no network to the npm registry?)";
  return std::filesystem::exists(dir + "/node_modules/openai/package.json")
             ? ""
             : "npm did not install openai";
}

TEST(ServerOpenAiNodeTest, OfficialClientDrivesTheServer) {
  TANDEM_REQUIRE_TINY_MODEL();
  if (const std::string why = ensure_openai_package(); !why.empty())
    GTEST_SKIP() << "skipping: " << why;
  test::ServeProcess server(R"({"model": {"chat_template": "chatml"},
                                "server": {"api_key": "node-key", "max_parallel": 8, "log_requests": false},
                                "context_size": 256, "threads": 2})",
                            {"-m", test::tiny_model_path()});
  const int port = server.wait_until_healthy(180s);
  ASSERT_NE(port, 0) << server.log();
  const std::string cmd =
      "cd '" + integration_dir() +
      "' && timeout 120 node openai_client.mjs http://127.0.0.1:" + std::to_string(port) +
      "/v1 node-key 2>&1";
  FILE* p = ::popen(cmd.c_str(), "r");
  ASSERT_NE(p, nullptr);
  std::string out;
  char buf[512];
  while (size_t n = std::fread(buf, 1, sizeof buf, p)) out.append(buf, n);
  const int status = ::pclose(p);
  EXPECT_EQ(status, 0) << out << "\nserver log:\n" << server.log();
  EXPECT_NE(out.find("openai client checks passed"), std::string::npos) << out;
  EXPECT_EQ(server.signal_and_wait(SIGINT), 0) << server.log();
}

}  // namespace
}  // namespace tandem
