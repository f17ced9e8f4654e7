#include "scheduler/routing_trace.h"

#include <algorithm>
#include <cmath>
#include <fstream>
#include <map>
#include <numeric>
#include <random>

#include <nlohmann/json.hpp>

namespace tandem::sched {
namespace {

using nlohmann::json;

constexpr const char* kFormat = "tandem-routing";

[[noreturn]] void fail(const std::string& where, const std::string& what) {
  throw TraceError(where + ": " + what);
}

int32_t int_field(const json& j, const char* key, const std::string& where) {
  auto it = j.find(key);
  if (it == j.end() || !it->is_number_integer())
    fail(where, std::string("\"") + key + "\" must be an integer");
  return it->get<int32_t>();
}

void parse_header(const json& h, RoutingTrace& t, const std::string& where) {
  if (!h.is_object() || h.value("format", "") != kFormat) {
    fail(where, "first line must be the header {\"format\":\"tandem-routing\",...}");
  }
  if (h.value("version", 0) != 1) fail(where, "unsupported version (this reader knows 1)");
  t.model = h.value("model", "");
  t.n_layer = int_field(h, "n_layer", where);
  t.n_expert = int_field(h, "n_expert", where);
  t.n_expert_used = int_field(h, "n_expert_used", where);
  if (t.n_layer <= 0 || t.n_expert <= 0 || t.n_expert_used <= 0 || t.n_expert_used > t.n_expert) {
    fail(where, "n_layer, n_expert, n_expert_used must be positive and n_expert_used <= n_expert");
  }
  if (auto it = h.find("prefetch_accuracy"); it != h.end() && !it->is_null()) {
    if (!it->is_number() || it->get<double>() < 0.0 || it->get<double>() > 1.0) {
      fail(where, "prefetch_accuracy must be a number in [0, 1]");
    }
    t.prefetch_accuracy = it->get<double>();
  }
}

LayerRouting parse_layer(const json& j, const RoutingTrace& t, const std::string& where) {
  const json* ex = j.contains("experts") ? &j["experts"] : nullptr;
  const json* wt = j.contains("weights") ? &j["weights"] : nullptr;
  if (!ex || !ex->is_array() || !wt || !wt->is_array() || ex->size() != wt->size()) {
    fail(where, "\"experts\" and \"weights\" must be arrays with one entry per token");
  }
  LayerRouting r;
  r.n_tokens = static_cast<int32_t>(ex->size());
  if (r.n_tokens == 0) fail(where, "a layer needs at least one token");
  for (size_t tok = 0; tok < ex->size(); ++tok) {
    const json& ids = (*ex)[tok];
    const json& ws = (*wt)[tok];
    if (!ids.is_array() || !ws.is_array() || ids.size() != static_cast<size_t>(t.n_expert_used) ||
        ws.size() != ids.size()) {
      fail(where, "token " + std::to_string(tok) + " must have " + std::to_string(t.n_expert_used) +
                      " expert ids and weights");
    }
    for (size_t k = 0; k < ids.size(); ++k) {
      if (!ids[k].is_number_integer() || ids[k].get<int64_t>() < 0 ||
          ids[k].get<int64_t>() >= t.n_expert) {
        fail(where, "token " + std::to_string(tok) + ": expert id " + ids[k].dump() +
                        " outside [0, " + std::to_string(t.n_expert) + ")");
      }
      if (!ws[k].is_number()) fail(where, "token " + std::to_string(tok) + ": weight not a number");
      r.ids.push_back(ids[k].get<int32_t>());
      r.weights.push_back(ws[k].get<float>());
    }
  }
  return r;
}

// Sampling of one layer's experts: Zipf over a per-layer permutation.
struct LayerPopularity {
  std::vector<int32_t> expert_of_rank;
  std::vector<double> cdf;
  int32_t sample(std::mt19937_64& rng) const {
    const double u = std::uniform_real_distribution<double>(0.0, cdf.back())(rng);
    const size_t r = std::lower_bound(cdf.begin(), cdf.end(), u) - cdf.begin();
    return expert_of_rank[std::min(r, cdf.size() - 1)];
  }
};

std::vector<LayerPopularity> popularity(const SyntheticTraceConfig& c) {
  std::mt19937_64 rng(c.seed);
  std::vector<LayerPopularity> pops(c.n_layer);
  for (LayerPopularity& p : pops) {
    p.expert_of_rank.resize(c.n_expert);
    std::iota(p.expert_of_rank.begin(), p.expert_of_rank.end(), 0);
    std::shuffle(p.expert_of_rank.begin(), p.expert_of_rank.end(), rng);
    double acc = 0;
    for (int32_t r = 0; r < c.n_expert; ++r) {
      acc += 1.0 / std::pow(static_cast<double>(r + 1), c.zipf_s);
      p.cdf.push_back(acc);
    }
  }
  return pops;
}

// One token's k experts at one layer; `prev` holds the previous token's experts (may be empty).
void draw_token(const LayerPopularity& pop, const SyntheticTraceConfig& c, const int32_t* prev,
                std::mt19937_64& rng, int32_t* out, float* weights) {
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const int32_t k = c.n_expert_used;
  for (int32_t i = 0; i < k; ++i) {
    int32_t e = -1;
    for (int attempt = 0; e < 0; ++attempt) {
      int32_t cand = (prev && u(rng) < c.reuse) ? prev[rng() % k] : pop.sample(rng);
      // Small expert counts can make rejection slow: fall back to a uniform pick.
      if (attempt > 64) cand = static_cast<int32_t>(rng() % c.n_expert);
      if (std::find(out, out + i, cand) == out + i) e = cand;
    }
    out[i] = e;
  }
  std::normal_distribution<double> normal(0.0, 1.0);
  std::vector<double> logits(k);
  double mx = -1e300, sum = 0;
  for (double& l : logits) l = normal(rng), mx = std::max(mx, l);
  for (double& l : logits) l = std::exp(l - mx), sum += l;
  std::sort(logits.begin(), logits.end(), std::greater<>());
  for (int32_t i = 0; i < k; ++i) weights[i] = static_cast<float>(logits[i] / sum);
}

RoutingStep draw_step(const std::vector<LayerPopularity>& pops, const SyntheticTraceConfig& c,
                      const RoutingStep* prev_step, int32_t seq, int32_t step, int32_t n_tokens,
                      Phase phase, std::mt19937_64& rng) {
  RoutingStep s{seq, step, phase, {}};
  const int32_t k = c.n_expert_used;
  for (int32_t l = 0; l < c.n_layer; ++l) {
    LayerRouting r;
    r.n_tokens = n_tokens;
    r.ids.resize(static_cast<size_t>(n_tokens) * k);
    r.weights.resize(r.ids.size());
    for (int32_t t = 0; t < n_tokens; ++t) {
      const int32_t* prev = nullptr;
      if (t > 0) {
        prev = &r.ids[static_cast<size_t>(t - 1) * k];
      } else if (prev_step) {
        const LayerRouting& pl = prev_step->layers[l];
        prev = &pl.ids[static_cast<size_t>(pl.n_tokens - 1) * k];
      }
      draw_token(pops[l], c, prev, rng, &r.ids[static_cast<size_t>(t) * k],
                 &r.weights[static_cast<size_t>(t) * k]);
    }
    s.layers.push_back(std::move(r));
  }
  return s;
}

}  // namespace

void write_trace(const RoutingTrace& t, std::ostream& out) {
  json h = {{"format", kFormat},    {"version", 1},           {"model", t.model},
            {"n_layer", t.n_layer}, {"n_expert", t.n_expert}, {"n_expert_used", t.n_expert_used}};
  if (t.prefetch_accuracy >= 0) h["prefetch_accuracy"] = t.prefetch_accuracy;
  out << h.dump() << '\n';
  const size_t k = static_cast<size_t>(t.n_expert_used);
  for (const RoutingStep& s : t.steps) {
    for (size_t l = 0; l < s.layers.size(); ++l) {
      const LayerRouting& r = s.layers[l];
      json ex = json::array(), wt = json::array();
      for (int32_t tok = 0; tok < r.n_tokens; ++tok) {
        ex.push_back(std::vector<int32_t>(r.ids.begin() + tok * k, r.ids.begin() + (tok + 1) * k));
        wt.push_back(
            std::vector<float>(r.weights.begin() + tok * k, r.weights.begin() + (tok + 1) * k));
      }
      out << json{{"seq", s.seq},
                  {"step", s.step},
                  {"phase", s.phase == Phase::Prefill ? "prefill" : "decode"},
                  {"layer", l},
                  {"experts", ex},
                  {"weights", wt}}
                 .dump()
          << '\n';
    }
  }
}

RoutingTrace read_trace(std::istream& in, const std::string& source) {
  RoutingTrace t;
  std::string line;
  int64_t line_no = 0;
  bool have_header = false;
  std::map<std::pair<int32_t, int32_t>, RoutingStep> steps;
  while (std::getline(in, line)) {
    ++line_no;
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    const std::string where = source + ":" + std::to_string(line_no);
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      fail(where, std::string("not valid JSON: ") + e.what());
    }
    if (!have_header) {
      parse_header(j, t, where);
      have_header = true;
      continue;
    }
    const int32_t seq = int_field(j, "seq", where), step = int_field(j, "step", where);
    const int32_t layer = int_field(j, "layer", where);
    if (layer < 0 || layer >= t.n_layer)
      fail(where, "layer " + std::to_string(layer) + " out of range");
    RoutingStep& s = steps[{seq, step}];
    if (s.layers.empty()) {
      s.seq = seq, s.step = step, s.layers.resize(t.n_layer);
      const std::string phase = j.value("phase", "");
      if (phase != "prefill" && phase != "decode")
        fail(where, "\"phase\" must be prefill or decode");
      s.phase = phase == "prefill" ? Phase::Prefill : Phase::Decode;
    }
    if (s.layers[layer].n_tokens != 0) fail(where, "layer " + std::to_string(layer) + " repeated");
    s.layers[layer] = parse_layer(j, t, where);
  }
  if (!have_header) throw TraceError(source + ": empty routing trace (no header line)");
  for (auto& [key, s] : steps) {
    for (int32_t l = 0; l < t.n_layer; ++l) {
      if (s.layers[l].n_tokens == 0) {
        throw TraceError(source + ": seq " + std::to_string(key.first) + " step " +
                         std::to_string(key.second) + " has no routing for layer " +
                         std::to_string(l));
      }
    }
    t.steps.push_back(std::move(s));
  }
  return t;
}

RoutingTrace load_trace(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw TraceError("routing trace '" + path + "' cannot be opened");
  return read_trace(in, path);
}

void save_trace(const RoutingTrace& t, const std::string& path) {
  std::ofstream out(path);
  if (!out) throw TraceError("cannot write routing trace '" + path + "'");
  write_trace(t, out);
  if (!out) throw TraceError("error writing routing trace '" + path + "'");
}

RoutingTrace make_synthetic_trace(const SyntheticTraceConfig& c) {
  if (c.n_layer <= 0 || c.n_expert <= 0 || c.n_expert_used <= 0 || c.n_expert_used > c.n_expert) {
    throw TraceError("synthetic trace: layer/expert counts must be positive, top-k <= experts");
  }
  if (c.n_prompt <= 0 || c.n_decode < 0 || c.zipf_s < 0 || c.reuse < 0 || c.reuse > 1) {
    throw TraceError("synthetic trace: n_prompt > 0, n_decode >= 0, zipf_s >= 0, reuse in [0, 1]");
  }
  RoutingTrace t;
  t.model = "synthetic";
  t.n_layer = c.n_layer;
  t.n_expert = c.n_expert;
  t.n_expert_used = c.n_expert_used;
  t.prefetch_accuracy = c.prefetch_accuracy;
  const std::vector<LayerPopularity> pops = popularity(c);
  std::mt19937_64 rng(c.seed * 0x9E3779B97F4A7C15ull + 1);
  t.steps.push_back(draw_step(pops, c, nullptr, 0, 0, c.n_prompt, Phase::Prefill, rng));
  t.steps.push_back(draw_step(pops, c, nullptr, 1, 0, c.n_prompt, Phase::Prefill, rng));
  for (int32_t i = 0; i < c.n_decode; ++i) {
    const RoutingStep& prev = t.steps.back();
    t.steps.push_back(draw_step(pops, c, &prev, 1, i + 1, 1, Phase::Decode, rng));
  }
  return t;
}

}  // namespace tandem::sched
