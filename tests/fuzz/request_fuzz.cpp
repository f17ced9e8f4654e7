// libFuzzer target: arbitrary request bodies through JSON parsing and the OpenAI request
// validation of both endpoints. Bad requests must end in ApiError, nothing else.
#include <cstdint>
#include <nlohmann/json.hpp>

#include "server/openai_schema.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const auto body = nlohmann::json::parse(data, data + size, nullptr, false);
  if (body.is_discarded()) return 0;
  for (bool chat : {false, true}) {
    try {
      (void)tandem::parse_completion_request(body, chat, 4096);
    } catch (const tandem::ApiError&) {
    }
  }
  return 0;
}
