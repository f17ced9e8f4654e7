#include "engine/chat_template.h"

namespace tandem {
namespace {

bool contains(std::string_view text, std::string_view part) {
  return text.find(part) != std::string_view::npos;
}

// DeepSeek V3's markers use fullwidth vertical bars (U+FF5C) and U+2581 for spaces.
constexpr std::string_view kDsUser = "<\xEF\xBD\x9CUser\xEF\xBD\x9C>";
constexpr std::string_view kDsAssistant =
    "<\xEF\xBD\x9C"
    "Assistant\xEF\xBD\x9C>";

std::string normalized_role(const ChatMessage& m, size_t index) {
  if (m.role == "system" || m.role == "developer") return "system";
  if (m.role == "user" || m.role == "assistant") return m.role;
  throw ChatTemplateError("messages[" + std::to_string(index) + "].role '" + m.role +
                          "' is not system, developer, user or assistant");
}

std::string trim(std::string_view s) {
  const size_t b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return "";
  const size_t e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

std::string render_chatml(std::span<const ChatMessage> msgs, bool gen) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    out += "<|im_start|>" + normalized_role(msgs[i], i) + "\n" + msgs[i].content + "<|im_end|>\n";
  }
  if (gen) out += "<|im_start|>assistant\n";
  return out;
}

// Mixtral style: a system message is folded into the first user turn.
std::string render_mistral(std::span<const ChatMessage> msgs, bool, std::string_view eos) {
  std::string out, system;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string role = normalized_role(msgs[i], i);
    if (role == "system") {
      system += (system.empty() ? "" : "\n\n") + msgs[i].content;
    } else if (role == "user") {
      const std::string content =
          system.empty() ? msgs[i].content : system + "\n\n" + msgs[i].content;
      system.clear();
      out += "[INST] " + content + " [/INST]";
    } else {
      out += msgs[i].content + std::string(eos);
    }
  }
  if (!system.empty()) out += "[INST] " + system + " [/INST]";
  return out;
}

std::string render_llama3(std::span<const ChatMessage> msgs, bool gen) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    out += "<|start_header_id|>" + normalized_role(msgs[i], i) + "<|end_header_id|>\n\n" +
           trim(msgs[i].content) + "<|eot_id|>";
  }
  if (gen) out += "<|start_header_id|>assistant<|end_header_id|>\n\n";
  return out;
}

std::string render_deepseek(std::span<const ChatMessage> msgs, bool gen, std::string_view eos) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string role = normalized_role(msgs[i], i);
    if (role == "system")
      out += msgs[i].content + "\n\n";
    else if (role == "user")
      out += "User: " + msgs[i].content + "\n\n";
    else
      out += "Assistant: " + msgs[i].content + std::string(eos);
  }
  if (gen) out += "Assistant:";
  return out;
}

std::string render_deepseek3(std::span<const ChatMessage> msgs, bool gen, std::string_view eos) {
  std::string out;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const std::string role = normalized_role(msgs[i], i);
    if (role == "system")
      out += msgs[i].content;
    else if (role == "user")
      out += std::string(kDsUser) + msgs[i].content;
    else
      out += std::string(kDsAssistant) + msgs[i].content + std::string(eos);
  }
  if (gen) out += kDsAssistant;
  return out;
}

}  // namespace

std::optional<ChatFamily> detect_chat_family(std::string_view t) {
  if (contains(t, "<|im_start|>")) return ChatFamily::ChatML;
  if (contains(t, "<|start_header_id|>") && contains(t, "<|eot_id|>")) return ChatFamily::Llama3;
  if (contains(t, kDsAssistant)) return ChatFamily::DeepSeek3;
  if (contains(t, "'Assistant: '") && contains(t, "'User: '")) return ChatFamily::DeepSeek;
  if (contains(t, "[INST]")) return ChatFamily::Mistral;
  return std::nullopt;
}

ChatFamily chat_family_from_name(std::string_view name) {
  if (name == "chatml") return ChatFamily::ChatML;
  if (name == "mistral") return ChatFamily::Mistral;
  if (name == "llama3") return ChatFamily::Llama3;
  if (name == "deepseek") return ChatFamily::DeepSeek;
  if (name == "deepseek3") return ChatFamily::DeepSeek3;
  throw ChatTemplateError("unknown chat template '" + std::string(name) +
                          "' (known: chatml, mistral, llama3, deepseek, deepseek3)");
}

std::string chat_family_name(ChatFamily family) {
  switch (family) {
    case ChatFamily::ChatML:
      return "chatml";
    case ChatFamily::Mistral:
      return "mistral";
    case ChatFamily::Llama3:
      return "llama3";
    case ChatFamily::DeepSeek:
      return "deepseek";
    case ChatFamily::DeepSeek3:
      return "deepseek3";
  }
  return "?";
}

ChatFamily resolve_chat_family(std::string_view override_name, std::string_view template_text) {
  if (!override_name.empty() && override_name != "auto")
    return chat_family_from_name(override_name);
  if (template_text.empty()) {
    throw ChatTemplateError(
        "the model has no tokenizer.chat_template; set model.chat_template in the config "
        "(chatml, mistral, llama3, deepseek or deepseek3)");
  }
  if (const auto family = detect_chat_family(template_text)) return *family;
  throw ChatTemplateError(
      "the model's tokenizer.chat_template is not one of the families Tandem renders (ChatML/Qwen, "
      "Mistral [INST], Llama 3, DeepSeek); set model.chat_template in the config to the closest "
      "one");
}

std::string apply_chat_template(ChatFamily family, std::span<const ChatMessage> messages,
                                bool add_generation_prompt, std::string_view eos_text) {
  if (messages.empty()) throw ChatTemplateError("messages must not be empty");
  switch (family) {
    case ChatFamily::ChatML:
      return render_chatml(messages, add_generation_prompt);
    case ChatFamily::Mistral:
      return render_mistral(messages, add_generation_prompt, eos_text);
    case ChatFamily::Llama3:
      return render_llama3(messages, add_generation_prompt);
    case ChatFamily::DeepSeek:
      return render_deepseek(messages, add_generation_prompt, eos_text);
    case ChatFamily::DeepSeek3:
      return render_deepseek3(messages, add_generation_prompt, eos_text);
  }
  throw ChatTemplateError("unhandled chat family");
}

std::vector<std::string> chat_end_markers(ChatFamily family, std::string_view eos_text) {
  std::vector<std::string> out;
  switch (family) {
    case ChatFamily::ChatML:
      out = {"<|im_end|>", "<|im_start|>"};
      break;
    case ChatFamily::Llama3:
      out = {"<|eot_id|>", "<|start_header_id|>"};
      break;
    case ChatFamily::Mistral:
      out = {"[INST]"};
      break;
    case ChatFamily::DeepSeek:
      break;  // its EOS ends the turn
    case ChatFamily::DeepSeek3:
      out = {std::string(kDsUser)};
      break;
  }
  if (!eos_text.empty()) out.emplace_back(eos_text);
  return out;
}

}  // namespace tandem
