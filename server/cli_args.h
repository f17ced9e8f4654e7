// Small helpers for subcommand argument parsing with errors that name the option.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace tandem {

class UsageError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Walks argv-style arguments; value() takes the argument after the current option.
class ArgReader {
 public:
  explicit ArgReader(const std::vector<std::string>& args) : args_(args) {}
  bool done() const { return i_ >= args_.size(); }
  const std::string& next() { return args_[i_++]; }
  std::string value(const std::string& option);
  int64_t int_value(const std::string& option, int64_t min, int64_t max);
  double float_value(const std::string& option, double min, double max);

 private:
  const std::vector<std::string>& args_;
  size_t i_ = 0;
};

// "12,7,99" -> {12, 7, 99}; throws UsageError naming the option on a bad list.
std::vector<int32_t> parse_int_list(const std::string& option, const std::string& text);

}  // namespace tandem
