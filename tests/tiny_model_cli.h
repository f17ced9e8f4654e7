// A test suite that runs the tandem binary as a user does, against one tiny gen-model model
// written to a fresh directory once per suite.
#pragma once

#include <gtest/gtest.h>

#include <memory>
#include <string>
#include <utility>

#include "tests/test_support.h"
#include "tools/gen_model.h"

namespace tandem::test {

class TinyModelCli : public testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = std::make_unique<TempDir>("tandem-cli-");
    GenModelOptions o;
    o.output_path = path("tiny.gguf");
    generate_model(o);
  }
  static void TearDownTestSuite() { dir_.reset(); }

  // A file in the suite's directory.
  static std::string path(const std::string& name) { return dir_->path() + "/" + name; }
  static std::string model() { return path("tiny.gguf"); }

  // `tandem ARGS`: its exit code, stdout in *out and stderr in *err.
  static int tandem(const std::string& args, std::string* out, std::string* err) {
    CliResult r = run_tandem(args, dir_->path());
    *out = std::move(r.out);
    *err = std::move(r.err);
    return r.exit_code;
  }

 private:
  static inline std::unique_ptr<TempDir> dir_;
};

}  // namespace tandem::test
