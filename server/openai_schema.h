// OpenAI request parsing and response shapes for /v1/completions and /v1/chat/completions.
// Parsing checks every field it uses and names the one that is wrong; unknown fields are ignored.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "engine/batcher.h"
#include "engine/chat_template.h"
#include "engine/sampler.h"

namespace tandem {

// An error that becomes an HTTP status and OpenAI's {"error": {...}} body.
class ApiError : public std::runtime_error {
 public:
  ApiError(int status, std::string type, const std::string& message, std::string param = {},
           std::string code = {})
      : std::runtime_error(message),
        status(status),
        type(std::move(type)),
        param(std::move(param)),
        code(std::move(code)) {}
  int status;
  std::string type;   // invalid_request_error, authentication_error, server_error, ...
  std::string param;  // the request field at fault, or ""
  std::string code;
};

// {"error": {"message", "type", "param", "code"}}; empty param/code become null.
nlohmann::json error_json(const std::string& message, const std::string& type,
                          const std::string& param = {}, const std::string& code = {});
// A 400 invalid_request_error naming `param`.
[[noreturn]] void throw_bad_field(const std::string& param, const std::string& message);

struct CompletionRequest {
  bool chat = false;
  std::string model;
  std::vector<ChatMessage> messages;   // chat
  std::string prompt_text;             // completions, when the prompt is text
  std::vector<int32_t> prompt_tokens;  // completions, when the prompt is token ids
  bool prompt_is_tokens = false;
  std::optional<int64_t> max_tokens;  // absent: the server default
  SamplingParams sampling;
  bool seed_given = false;
  std::vector<std::string> stop;
  bool stream = false;
  bool include_usage = false;  // stream_options.include_usage
  bool ignore_eos = false;     // llama-server extension
};

// Throws ApiError (400) naming the field; `n_vocab` bounds token-id prompts.
CompletionRequest parse_completion_request(const nlohmann::json& body, bool chat, int32_t n_vocab);

struct CompletionResult {
  std::string id, model, text;
  int64_t created = 0;
  FinishReason finish = FinishReason::None;
  GenerationStats stats;
};

nlohmann::json usage_json(const GenerationStats& stats);
// llama-server's "timings" object (prompt_per_second, predicted_per_second, ...).
nlohmann::json timings_json(const GenerationStats& stats);
nlohmann::json completion_json(const CompletionResult& r, bool chat);
// One SSE chunk; `text` is a delta; finish None leaves finish_reason null. The chat stream's
// first chunk carries the assistant role (first_chunk).
nlohmann::json stream_chunk_json(const CompletionResult& r, bool chat, const std::string& text,
                                 bool first_chunk, FinishReason finish);
// The final usage-only chunk of stream_options.include_usage.
nlohmann::json stream_usage_json(const CompletionResult& r, bool chat);

}  // namespace tandem
