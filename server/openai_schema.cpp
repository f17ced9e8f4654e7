#include "server/openai_schema.h"

#include <cmath>
#include <limits>

namespace tandem {
namespace {

using nlohmann::json;

std::string json_type(const json& v) {
  if (v.is_number_integer()) return "integer";
  if (v.is_number_float()) return "number";
  return v.type_name();
}

[[noreturn]] void wrong_type(const std::string& param, const std::string& want, const json& v) {
  throw_bad_field(param, "'" + param + "' must be " + want + ", got " + json_type(v));
}

// Built with += : GCC 12 reports a false -Wrestrict for "literal" + std::string chains here.
std::string range_message(const char* key, const std::string& lo, const std::string& hi,
                          const json& v) {
  std::string m = "'";
  m += key;
  m += "' must be in [";
  m += lo;
  m += ", ";
  m += hi;
  m += "], got ";
  m += v.dump();
  return m;
}

// The field's value, or nullptr when absent or null (null means "use the default").
const json* field(const json& body, const char* key) {
  const auto it = body.find(key);
  return it == body.end() || it->is_null() ? nullptr : &*it;
}

double number_in(const json& body, const char* key, double lo, double hi, double fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_number()) wrong_type(key, "a number", *v);
  const double x = v->get<double>();
  if (!(x >= lo && x <= hi)) {
    throw_bad_field(key, range_message(key, json(lo).dump(), json(hi).dump(), *v));
  }
  return x;
}

std::optional<int64_t> integer_in(const json& body, const char* key, int64_t lo, int64_t hi) {
  const json* v = field(body, key);
  if (!v) return std::nullopt;
  // 5.0 counts as an integer (some clients serialize every number as a float).
  const bool integral = v->is_number_integer() ||
                        (v->is_number_float() && std::trunc(v->get<double>()) == v->get<double>() &&
                         std::abs(v->get<double>()) < 9e18);
  if (!integral) wrong_type(key, "an integer", *v);
  const int64_t x =
      v->is_number_unsigned() && v->get<uint64_t>() > uint64_t(INT64_MAX)
          ? INT64_MAX
          : (v->is_number_integer() ? v->get<int64_t>() : static_cast<int64_t>(v->get<double>()));
  if (x < lo || x > hi) {
    throw_bad_field(key, range_message(key, std::to_string(lo), std::to_string(hi), *v));
  }
  return x;
}

bool boolean(const json& body, const char* key, bool fallback) {
  const json* v = field(body, key);
  if (!v) return fallback;
  if (!v->is_boolean()) wrong_type(key, "a boolean", *v);
  return v->get<bool>();
}

std::string content_text(const json& content, const std::string& param) {
  if (content.is_null()) return "";
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) wrong_type(param, "a string or an array of content parts", content);
  std::string text;
  for (size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const std::string p = param + "[" + std::to_string(i) + "]";
    if (!part.is_object()) wrong_type(p, "an object", part);
    const json* type = field(part, "type");
    if (!type || !type->is_string() || *type != "text") {
      throw_bad_field(p + ".type",
                      "'" + p + ".type' must be \"text\" (only text content is supported)");
    }
    const json* t = field(part, "text");
    if (!t || !t->is_string()) throw_bad_field(p + ".text", "'" + p + ".text' must be a string");
    text += t->get<std::string>();
  }
  return text;
}

std::vector<ChatMessage> parse_messages(const json& body) {
  const json* msgs = field(body, "messages");
  if (!msgs) throw_bad_field("messages", "'messages' is required");
  if (!msgs->is_array()) wrong_type("messages", "an array", *msgs);
  if (msgs->empty()) throw_bad_field("messages", "'messages' must not be empty");
  std::vector<ChatMessage> out;
  for (size_t i = 0; i < msgs->size(); ++i) {
    const json& m = (*msgs)[i];
    const std::string p = "messages[" + std::to_string(i) + "]";
    if (!m.is_object()) wrong_type(p, "an object", m);
    const json* role = field(m, "role");
    if (!role) throw_bad_field(p + ".role", "'" + p + ".role' is required");
    if (!role->is_string()) wrong_type(p + ".role", "a string", *role);
    const std::string r = role->get<std::string>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant") {
      throw_bad_field(
          p + ".role",
          "'" + p + ".role' must be system, developer, user or assistant, got '" + r + "'");
    }
    const auto it = m.find("content");
    if (it == m.end()) throw_bad_field(p + ".content", "'" + p + ".content' is required");
    out.push_back({r, content_text(*it, p + ".content")});
  }
  return out;
}

void parse_prompt(const json& body, int32_t n_vocab, CompletionRequest& r) {
  const json* prompt = field(body, "prompt");
  if (!prompt) throw_bad_field("prompt", "'prompt' is required");
  if (prompt->is_string()) {
    r.prompt_text = prompt->get<std::string>();
    return;
  }
  if (!prompt->is_array() || prompt->empty())
    wrong_type("prompt", "a string or a non-empty array", *prompt);
  if ((*prompt)[0].is_string()) {
    if (prompt->size() != 1) throw_bad_field("prompt", "'prompt' may hold only one string (n = 1)");
    r.prompt_text = (*prompt)[0].get<std::string>();
    return;
  }
  r.prompt_is_tokens = true;
  for (size_t i = 0; i < prompt->size(); ++i) {
    const json& t = (*prompt)[i];
    const std::string p = "prompt[" + std::to_string(i) + "]";
    if (!t.is_number_integer()) wrong_type(p, "a token id (integer)", t);
    if (t.get<int64_t>() < 0 || t.get<int64_t>() >= n_vocab) {
      throw_bad_field(p, "'" + p + "' = " + t.dump() + " is not a token id in [0, " +
                             std::to_string(n_vocab) + ")");
    }
    r.prompt_tokens.push_back(t.get<int32_t>());
  }
}

std::vector<std::string> parse_stop(const json& body) {
  const json* stop = field(body, "stop");
  if (!stop) return {};
  if (stop->is_string())
    return stop->get<std::string>().empty() ? std::vector<std::string>{}
                                            : std::vector<std::string>{stop->get<std::string>()};
  if (!stop->is_array()) wrong_type("stop", "a string or an array of strings", *stop);
  if (stop->size() > 16) throw_bad_field("stop", "'stop' may hold at most 16 strings");
  std::vector<std::string> out;
  for (size_t i = 0; i < stop->size(); ++i) {
    if (!(*stop)[i].is_string())
      wrong_type("stop[" + std::to_string(i) + "]", "a string", (*stop)[i]);
    if (!(*stop)[i].get<std::string>().empty()) out.push_back((*stop)[i].get<std::string>());
  }
  return out;
}

void parse_sampling(const json& body, CompletionRequest& r) {
  SamplingParams& s = r.sampling;
  s.temperature = static_cast<float>(number_in(body, "temperature", 0, 2, s.temperature));
  s.top_p = static_cast<float>(number_in(body, "top_p", 0, 1, s.top_p));
  s.min_p = static_cast<float>(number_in(body, "min_p", 0, 1, s.min_p));
  s.top_k = static_cast<int32_t>(integer_in(body, "top_k", 0, 1 << 30).value_or(s.top_k));
  s.presence_penalty =
      static_cast<float>(number_in(body, "presence_penalty", -2, 2, s.presence_penalty));
  s.frequency_penalty =
      static_cast<float>(number_in(body, "frequency_penalty", -2, 2, s.frequency_penalty));
  s.repeat_penalty = static_cast<float>(number_in(body, "repeat_penalty", 0, 10, s.repeat_penalty));
  if (const auto seed = integer_in(body, "seed", INT64_MIN, INT64_MAX)) {
    s.seed = static_cast<uint64_t>(*seed);
    r.seed_given = true;
  }
}

}  // namespace

json error_json(const std::string& message, const std::string& type, const std::string& param,
                const std::string& code) {
  return {{"error",
           {{"message", message},
            {"type", type},
            {"param", param.empty() ? json(nullptr) : json(param)},
            {"code", code.empty() ? json(nullptr) : json(code)}}}};
}

void throw_bad_field(const std::string& param, const std::string& message) {
  throw ApiError(400, "invalid_request_error", message, param);
}

CompletionRequest parse_completion_request(const json& body, bool chat, int32_t n_vocab) {
  if (!body.is_object())
    throw ApiError(400, "invalid_request_error", "the request body must be a JSON object");
  CompletionRequest r;
  r.chat = chat;
  if (const json* m = field(body, "model")) {
    if (!m->is_string()) wrong_type("model", "a string", *m);
    r.model = m->get<std::string>();
  }
  if (chat)
    r.messages = parse_messages(body);
  else
    parse_prompt(body, n_vocab, r);
  // max_completion_tokens is the newer name of max_tokens for chat.
  r.max_tokens = integer_in(body, "max_tokens", 1, INT64_MAX);
  if (const auto mct = integer_in(body, "max_completion_tokens", 1, INT64_MAX)) r.max_tokens = mct;
  if (const auto n = integer_in(body, "n", 1, INT64_MAX); n && *n != 1) {
    throw_bad_field("n", "'n' must be 1 (one choice per request)");
  }
  parse_sampling(body, r);
  r.stop = parse_stop(body);
  r.stream = boolean(body, "stream", false);
  r.ignore_eos = boolean(body, "ignore_eos", false);
  if (const json* so = field(body, "stream_options")) {
    if (!so->is_object()) wrong_type("stream_options", "an object", *so);
    if (const json* iu = field(*so, "include_usage")) {
      if (!iu->is_boolean()) wrong_type("stream_options.include_usage", "a boolean", *iu);
      r.include_usage = iu->get<bool>();
    }
  }
  return r;
}

json usage_json(const GenerationStats& s) {
  return {{"prompt_tokens", s.n_prompt},
          {"completion_tokens", s.n_generated},
          {"total_tokens", s.n_prompt + s.n_generated}};
}

json timings_json(const GenerationStats& s) {
  const auto per_second = [](int32_t n, double ms) { return ms > 0 ? 1000.0 * n / ms : 0.0; };
  const auto per_token = [](int32_t n, double ms) { return n > 0 ? ms / n : 0.0; };
  // The first generated token comes out of the prompt step; llama-server counts the rest.
  const int32_t n_predicted = std::max(0, s.n_generated - 1);
  return {{"prompt_n", s.n_prompt},
          {"prompt_ms", s.prompt_ms},
          {"prompt_per_token_ms", per_token(s.n_prompt, s.prompt_ms)},
          {"prompt_per_second", per_second(s.n_prompt, s.prompt_ms)},
          {"predicted_n", s.n_generated},
          {"predicted_ms", s.predicted_ms},
          {"predicted_per_token_ms", per_token(n_predicted, s.predicted_ms)},
          {"predicted_per_second", per_second(n_predicted, s.predicted_ms)},
          {"queue_ms", s.queue_ms}};
}

namespace {

json finish_json(FinishReason f) {
  return f == FinishReason::None ? json(nullptr) : json(finish_reason_name(f));
}

json envelope(const CompletionResult& r, bool chat, bool chunk) {
  return {
      {"id", r.id},
      {"object", chat ? (chunk ? "chat.completion.chunk" : "chat.completion") : "text_completion"},
      {"created", r.created},
      {"model", r.model},
      {"system_fingerprint", "tandem"}};
}

}  // namespace

json completion_json(const CompletionResult& r, bool chat) {
  json out = envelope(r, chat, false);
  json choice = {{"index", 0}, {"finish_reason", finish_json(r.finish)}, {"logprobs", nullptr}};
  if (chat)
    choice["message"] = {{"role", "assistant"}, {"content", r.text}};
  else
    choice["text"] = r.text;
  out["choices"] = json::array({choice});
  out["usage"] = usage_json(r.stats);
  out["timings"] = timings_json(r.stats);
  return out;
}

json stream_chunk_json(const CompletionResult& r, bool chat, const std::string& text,
                       bool first_chunk, FinishReason finish) {
  json out = envelope(r, chat, true);
  json choice = {{"index", 0}, {"finish_reason", finish_json(finish)}, {"logprobs", nullptr}};
  if (chat) {
    json delta = json::object();
    if (first_chunk) delta["role"] = "assistant";
    if (!text.empty() || (first_chunk && finish == FinishReason::None)) delta["content"] = text;
    choice["delta"] = delta;
  } else {
    choice["text"] = text;
  }
  out["choices"] = json::array({choice});
  if (finish != FinishReason::None) out["timings"] = timings_json(r.stats);
  return out;
}

json stream_usage_json(const CompletionResult& r, bool chat) {
  json out = envelope(r, chat, true);
  out["choices"] = json::array();
  out["usage"] = usage_json(r.stats);
  return out;
}

}  // namespace tandem
