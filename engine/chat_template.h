// Chat templates of the model families we serve. The family is detected from the GGUF's
// tokenizer.chat_template text (or named in the config) and rendered by our own code, not by
// a Jinja interpreter: each family has one fixed prompt layout.
#pragma once

#include <optional>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class ChatTemplateError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

enum class ChatFamily { ChatML, Mistral, Llama3, DeepSeek, DeepSeek3 };

struct ChatMessage {
  std::string role;  // system | user | assistant ("developer" is treated as system)
  std::string content;
};

// The family a template's text belongs to, or nullopt when it is none we know.
std::optional<ChatFamily> detect_chat_family(std::string_view template_text);

// "chatml", "mistral", "llama3", "deepseek", "deepseek3" <-> family. Throws ChatTemplateError.
ChatFamily chat_family_from_name(std::string_view name);
std::string chat_family_name(ChatFamily family);

// Picks the family: `override_name` unless "auto"; else detected from `template_text`.
// Throws ChatTemplateError saying what to configure when neither gives a family.
ChatFamily resolve_chat_family(std::string_view override_name, std::string_view template_text);

// The prompt text for `messages`. The tokenizer adds BOS (add_special), so the text does not
// start with it. `eos_text` is the EOS token's text (ends assistant turns in some families).
// Throws ChatTemplateError for an empty list or an unknown role.
std::string apply_chat_template(ChatFamily family, std::span<const ChatMessage> messages,
                                bool add_generation_prompt, std::string_view eos_text);

// Text that ends an assistant turn in this family; used as extra stop strings, for vocabularies
// where the marker is plain text rather than one end-of-generation token.
std::vector<std::string> chat_end_markers(ChatFamily family, std::string_view eos_text);

}  // namespace tandem
