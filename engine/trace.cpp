#include "engine/trace.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <stdexcept>

#include <nlohmann/json.hpp>

namespace tandem {
namespace {

// Numbers stay numbers in the viewer (sortable, summable); anything else is a string.
nlohmann::json arg_value(const std::string& text) {
  if (!text.empty()) {
    char* end = nullptr;
    errno = 0;
    const double v = std::strtod(text.c_str(), &end);
    if (errno == 0 && end == text.c_str() + text.size() && std::isfinite(v)) return v;
  }
  return text;
}

nlohmann::json metadata(const char* kind, int pid, int tid, const std::string& name) {
  nlohmann::json e = {{"name", kind}, {"ph", "M"}, {"pid", pid}, {"tid", tid}};
  e["args"] = {{"name", name}};
  return e;
}

// Process and track ids in order of first appearance, so the viewer lists rows in the order
// the program first used them.
struct IdTable {
  std::map<std::string, int> pid_of;
  std::map<std::pair<int, std::string>, int> tid_of;
  nlohmann::json events = nlohmann::json::array();

  std::pair<int, int> ids(const TraceSpan& s) {
    auto [pit, new_pid] = pid_of.try_emplace(s.process, static_cast<int>(pid_of.size()) + 1);
    const int pid = pit->second;
    if (new_pid) events.push_back(metadata("process_name", pid, 0, s.process));
    auto [tit, new_tid] = tid_of.try_emplace({pid, s.track}, static_cast<int>(tid_of.size()) + 1);
    const int tid = tit->second;
    if (new_tid) events.push_back(metadata("thread_name", pid, tid, s.track));
    return {pid, tid};
  }
};

}  // namespace

std::string TraceRecorder::chrome_trace_json() const {
  const std::vector<TraceSpan> all = spans();
  IdTable table;
  for (const TraceSpan& s : all) {
    const auto [pid, tid] = table.ids(s);
    nlohmann::json e = {{"name", s.name},  {"cat", s.category}, {"ph", "X"}, {"ts", s.start_us},
                        {"dur", s.dur_us}, {"pid", pid},        {"tid", tid}};
    nlohmann::json args = nlohmann::json::object();
    for (const auto& [key, value] : s.args) args[key] = arg_value(value);
    e["args"] = std::move(args);
    table.events.push_back(std::move(e));
  }
  nlohmann::json doc = {{"traceEvents", std::move(table.events)}, {"displayTimeUnit", "ms"}};
  return doc.dump();
}

void TraceRecorder::write_chrome_trace(const std::string& path) const {
  const std::string text = chrome_trace_json();
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) {
    throw std::runtime_error("trace: cannot open '" + path +
                             "' for writing: " + std::strerror(errno));
  }
  out << text << '\n';
  out.close();
  if (!out) throw std::runtime_error("trace: failed writing '" + path + "'");
}

}  // namespace tandem
