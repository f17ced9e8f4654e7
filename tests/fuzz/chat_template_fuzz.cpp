// libFuzzer target: template detection on arbitrary text, and rendering of arbitrary
// conversations (roles and contents from the input) for every family.
#include <cstdint>
#include <string>
#include <vector>

#include "engine/chat_template.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string input(reinterpret_cast<const char*>(data), size);
  (void)tandem::detect_chat_family(input);
  try {
    (void)tandem::resolve_chat_family(input.substr(0, 12), input);
  } catch (const tandem::ChatTemplateError&) {
  }
  // Messages separated by '\x1f'; the first byte of each picks its role.
  static const char* kRoles[] = {"system", "user", "assistant", "developer", "tool"};
  std::vector<tandem::ChatMessage> messages;
  size_t start = 0;
  while (start <= input.size()) {
    const size_t end = std::min(input.find('\x1f', start), input.size());
    const std::string part = input.substr(start, end - start);
    const int role = part.empty() ? 1 : static_cast<unsigned char>(part[0]) % 5;
    messages.push_back({kRoles[role], part.empty() ? part : part.substr(1)});
    start = end + 1;
  }
  for (auto family : {tandem::ChatFamily::ChatML, tandem::ChatFamily::Mistral, tandem::ChatFamily::Llama3,
                      tandem::ChatFamily::DeepSeek, tandem::ChatFamily::DeepSeek3}) {
    try {
      (void)tandem::apply_chat_template(family, messages, size % 2 == 0, "</s>");
    } catch (const tandem::ChatTemplateError&) {
    }
  }
  return 0;
}
