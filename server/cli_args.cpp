#include "server/cli_args.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>

namespace tandem {

std::string ArgReader::value(const std::string& option) {
  if (done()) throw UsageError("option " + option + " needs a value");
  return next();
}

int64_t ArgReader::int_value(const std::string& option, int64_t min, int64_t max) {
  const std::string v = value(option);
  char* end = nullptr;
  errno = 0;
  const long long x = std::strtoll(v.c_str(), &end, 10);
  if (v.empty() || *end != '\0' || errno == ERANGE || x < min || x > max) {
    throw UsageError("option " + option + ": '" + v + "' is not an integer in [" +
                     std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return x;
}

double ArgReader::float_value(const std::string& option, double min, double max) {
  const std::string v = value(option);
  char* end = nullptr;
  const double x = std::strtod(v.c_str(), &end);
  if (v.empty() || *end != '\0' || !std::isfinite(x) || x < min || x > max) {
    throw UsageError("option " + option + ": '" + v + "' is not a number in [" +
                     std::to_string(min) + ", " + std::to_string(max) + "]");
  }
  return x;
}

std::vector<int32_t> parse_int_list(const std::string& option, const std::string& text) {
  std::vector<int32_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    char* end = nullptr;
    errno = 0;
    const long x = std::strtol(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno == ERANGE || x < 0 || x > INT32_MAX) {
      throw UsageError("option " + option + ": '" + item + "' in '" + text +
                       "' is not a non-negative integer");
    }
    out.push_back(static_cast<int32_t>(x));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

}  // namespace tandem
