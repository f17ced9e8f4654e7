// `tandem inspect` as a user runs it (the built binary, TANDEM_BINARY): reference models print
// their architecture and shapes; broken files exit non-zero with a one-line reason.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>

#include "tests/test_support.h"

namespace tandem {
namespace {

namespace fs = std::filesystem;

std::string temp_path(const std::string& name) {
  return (fs::temp_directory_path() / ("tandem-inspect-" + std::to_string(::getpid()) + "-" + name))
      .string();
}

using test::CliResult;
using test::slurp;

CliResult inspect(const std::string& args) {
  return test::run_tandem("inspect " + args, fs::temp_directory_path().string());
}

void write_file(const std::string& path, const std::string& bytes) {
  std::ofstream f(path, std::ios::binary);
  f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

size_t n_lines(const std::string& s) {
  return static_cast<size_t>(std::count(s.begin(), s.end(), '\n'));
}

TEST(CliInspect, EveryReferenceModelPrintsItsArchitectureAndShapes) {
  TANDEM_REQUIRE_SHARED();
  int n = 0;
  for (const auto& entry : fs::directory_iterator(test::shared_path("models"))) {
    if (entry.path().extension() != ".gguf") continue;
    const std::string file = entry.path().filename().string();
    const std::string arch =
        file.rfind("tiny-mixtral", 0) == 0 ? "llama" : file.substr(5, file.find('-', 5) - 5);
    const CliResult r = inspect(entry.path().string());
    EXPECT_EQ(r.exit_code, 0) << file << ": " << r.err;
    EXPECT_NE(r.out.find("architecture:  " + arch + "\n"), std::string::npos) << file << "\n"
                                                                              << r.out;
    EXPECT_NE(r.out.find("expert_count                         8\n"), std::string::npos) << file;
    EXPECT_NE(r.out.find("tensors ("), std::string::npos) << file;
    const size_t at = r.out.find("blk.2.ffn_up_exps.weight");
    ASSERT_NE(at, std::string::npos) << file;
    EXPECT_NE(r.out.substr(at, r.out.find('\n', at) - at).find("[256, 256, 8]"), std::string::npos)
        << file;
    ++n;
  }
  EXPECT_GE(n, 10);
}

// A failing inspect: non-zero exit, nothing on stdout, exactly one line on stderr with `what`.
void expect_one_line_failure(const std::string& args, const std::string& what) {
  const CliResult r = inspect(args);
  EXPECT_NE(r.exit_code, 0) << args;
  EXPECT_EQ(r.out, "") << args;
  EXPECT_EQ(n_lines(r.err), 1u) << "one-line reason: " << r.err;
  EXPECT_NE(r.err.find(what), std::string::npos) << r.err;
}

TEST(CliInspect, CorruptedFilesFailWithAOneLineReason) {
  TANDEM_REQUIRE_SHARED();
  const std::string model = slurp(test::shared_path("models/tiny-olmoe-f16.gguf"));
  ASSERT_GT(model.size(), 100000u);
  const std::string cut = temp_path("cut.gguf");
  write_file(cut, model.substr(0, 3000));  // inside the tokenizer's token strings
  expect_one_line_failure(cut, "invalid GGUF: metadata 'tokenizer.ggml.tokens'");
  write_file(cut, model.substr(0, model.size() - 1000));  // inside output.weight's data
  expect_one_line_failure(cut, "tensor 'output.weight' data at byte offset");
  std::string bad = model;
  bad[5] = 9;  // version 2313
  write_file(cut, bad);
  expect_one_line_failure(cut, "version at byte offset 4: unsupported version");
  fs::remove(cut);
}

TEST(CliInspect, MissingFileAndBadArguments) {
  expect_one_line_failure(temp_path("does-not-exist.gguf"), "does-not-exist.gguf");
  const CliResult r = inspect("");
  EXPECT_EQ(r.exit_code, 2);
  EXPECT_NE(r.err.find("no file given"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace tandem
