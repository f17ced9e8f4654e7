#include "engine/chat_template.h"

#include <gtest/gtest.h>

#include "engine/gguf.h"
#include "tests/test_support.h"

namespace tandem {
namespace {

const std::vector<ChatMessage> kConversation = {
    {"system", "Be brief."}, {"user", "Hi"}, {"assistant", "Hello."}, {"user", "Why?"}};

TEST(ChatTemplate, DetectsFamiliesFromTemplateText) {
  EXPECT_EQ(detect_chat_family("{% for m in messages %}<|im_start|>{{m.role}}"),
            ChatFamily::ChatML);
  EXPECT_EQ(
      detect_chat_family("{{'<|start_header_id|>' + role + '<|end_header_id|>'}}...<|eot_id|>"),
      ChatFamily::Llama3);
  EXPECT_EQ(detect_chat_family("{{ '[INST] ' + message['content'] + ' [/INST]' }}"),
            ChatFamily::Mistral);
  EXPECT_EQ(detect_chat_family("{{ 'User: ' + c }}{{ 'Assistant: ' + c + eos_token }}"),
            ChatFamily::DeepSeek);
  EXPECT_EQ(detect_chat_family("{{'<\xEF\xBD\x9C"
                               "Assistant\xEF\xBD\x9C>' + content}}"),
            ChatFamily::DeepSeek3);
  EXPECT_EQ(detect_chat_family("{{ '<|user|>' + content + '<|end|>' }}"), std::nullopt);
}

TEST(ChatTemplate, DetectsTheRealQwen3AndRejectsPhi3Template) {
  TANDEM_REQUIRE_SHARED();
  const auto qwen = GgufFile::open(test::shared_path("tokenizer/ggml-vocab-qwen3.gguf"));
  EXPECT_EQ(detect_chat_family(qwen->get_string("tokenizer.chat_template")), ChatFamily::ChatML);
  const auto phi = GgufFile::open(test::shared_path("tokenizer/ggml-vocab-phi-3.gguf"));
  const std::string phi_template = phi->get_string("tokenizer.chat_template");
  EXPECT_EQ(detect_chat_family(phi_template), std::nullopt);
  EXPECT_THROW(resolve_chat_family("auto", phi_template), ChatTemplateError);
  EXPECT_EQ(resolve_chat_family("chatml", phi_template), ChatFamily::ChatML);
}

TEST(ChatTemplate, ResolveNeedsATemplateOrAnOverride) {
  try {
    resolve_chat_family("auto", "");
    FAIL() << "no template and no override must throw";
  } catch (const ChatTemplateError& e) {
    EXPECT_NE(std::string(e.what()).find("model.chat_template"), std::string::npos) << e.what();
  }
  EXPECT_EQ(resolve_chat_family("llama3", ""), ChatFamily::Llama3);
  EXPECT_THROW(resolve_chat_family("vicuna", ""), ChatTemplateError);
  for (const char* name : {"chatml", "mistral", "llama3", "deepseek", "deepseek3"}) {
    EXPECT_EQ(chat_family_name(chat_family_from_name(name)), name);
  }
}

TEST(ChatTemplate, RendersChatML) {
  EXPECT_EQ(apply_chat_template(ChatFamily::ChatML, kConversation, true, "<|endoftext|>"),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
            "<|im_start|>assistant\nHello.<|im_end|>\n<|im_start|>user\nWhy?<|im_end|>\n"
            "<|im_start|>assistant\n");
}

TEST(ChatTemplate, RendersMistralWithSystemFoldedIntoFirstUserTurn) {
  EXPECT_EQ(apply_chat_template(ChatFamily::Mistral, kConversation, true, "</s>"),
            "[INST] Be brief.\n\nHi [/INST]Hello.</s>[INST] Why? [/INST]");
}

TEST(ChatTemplate, RendersLlama3) {
  const std::vector<ChatMessage> msgs = {{"user", " Hi \n"}};
  EXPECT_EQ(apply_chat_template(ChatFamily::Llama3, msgs, true, ""),
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
}

TEST(ChatTemplate, RendersDeepSeekFamilies) {
  EXPECT_EQ(apply_chat_template(ChatFamily::DeepSeek, kConversation, true, "<eos>"),
            "Be brief.\n\nUser: Hi\n\nAssistant: Hello.<eos>User: Why?\n\nAssistant:");
  const std::string v3 = apply_chat_template(ChatFamily::DeepSeek3, kConversation, true, "<eos>");
  const std::string marker =
      "<\xEF\xBD\x9C"
      "Assistant\xEF\xBD\x9C>";
  EXPECT_TRUE(v3.ends_with(marker)) << v3;
  EXPECT_NE(v3.find(marker + "Hello.<eos>"), std::string::npos) << v3;
  EXPECT_EQ(v3.substr(0, 9), "Be brief.");
}

TEST(ChatTemplate, RejectsEmptyListsAndUnknownRoles) {
  EXPECT_THROW(apply_chat_template(ChatFamily::ChatML, {}, true, ""), ChatTemplateError);
  const std::vector<ChatMessage> bad = {{"user", "a"}, {"wizard", "b"}};
  try {
    apply_chat_template(ChatFamily::ChatML, bad, true, "");
    FAIL();
  } catch (const ChatTemplateError& e) {
    EXPECT_NE(std::string(e.what()).find("messages[1].role"), std::string::npos) << e.what();
  }
  const std::vector<ChatMessage> dev = {{"developer", "x"}};
  EXPECT_EQ(apply_chat_template(ChatFamily::ChatML, dev, false, ""),
            "<|im_start|>system\nx<|im_end|>\n");
}

TEST(ChatTemplate, EndMarkersIncludeEos) {
  const auto m = chat_end_markers(ChatFamily::ChatML, "</s>");
  EXPECT_NE(std::find(m.begin(), m.end(), "<|im_end|>"), m.end());
  EXPECT_NE(std::find(m.begin(), m.end(), "</s>"), m.end());
}

}  // namespace
}  // namespace tandem
