#include "engine/tokenizer.h"

#include <algorithm>
#include <stdexcept>

#include "engine/gguf.h"
#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"

namespace tandem {
namespace {

int32_t optional_id(const GgufFile& f, const std::string& key, int32_t n_vocab) {
  const int64_t id = f.get_int(key, -1);
  if (id < -1 || id >= n_vocab) {
    throw std::runtime_error(f.path() + ": metadata '" + key + "' = " + std::to_string(id) +
                             " is not a token id (vocabulary of " + std::to_string(n_vocab) + ")");
  }
  return static_cast<int32_t>(id);
}

Vocab read_vocab(const GgufFile& f, bool spm) {
  Vocab v;
  v.text = f.get_string_array("tokenizer.ggml.tokens");
  const auto n = static_cast<int32_t>(v.text.size());
  if (n == 0) throw std::runtime_error(f.path() + ": metadata 'tokenizer.ggml.tokens' is empty");
  v.score.assign(n, 0.0f);
  if (f.has("tokenizer.ggml.scores")) {
    const auto& s = f.get_float_array("tokenizer.ggml.scores");
    if (static_cast<int32_t>(s.size()) != n) throw std::runtime_error(f.path() + ": tokenizer.ggml.scores has " + std::to_string(s.size()) + " entries, tokens has " + std::to_string(n));
    for (int32_t i = 0; i < n; ++i) v.score[i] = static_cast<float>(s[i]);
  }
  v.type.assign(n, TokenType::Normal);
  if (f.has("tokenizer.ggml.token_type")) {
    const auto& t = f.get_int_array("tokenizer.ggml.token_type");
    if (static_cast<int32_t>(t.size()) != n) throw std::runtime_error(f.path() + ": tokenizer.ggml.token_type has " + std::to_string(t.size()) + " entries, tokens has " + std::to_string(n));
    for (int32_t i = 0; i < n; ++i) v.type[i] = (t[i] >= 0 && t[i] <= 6) ? static_cast<TokenType>(t[i]) : TokenType::Normal;
  }
  v.id_of.reserve(n);
  for (int32_t i = 0; i < n; ++i) v.id_of.emplace(v.text[i], i);  // first occurrence wins
  v.bos = optional_id(f, "tokenizer.ggml.bos_token_id", n);
  v.eos = optional_id(f, "tokenizer.ggml.eos_token_id", n);
  v.unk = optional_id(f, "tokenizer.ggml.unknown_token_id", n);
  v.add_bos = f.get_bool("tokenizer.ggml.add_bos_token", spm) && v.bos >= 0;
  v.add_eos = f.get_bool("tokenizer.ggml.add_eos_token", false) && v.eos >= 0;
  v.add_space_prefix = f.get_bool("tokenizer.ggml.add_space_prefix", spm);
  for (int32_t i = 0; i < n; ++i) {
    const TokenType t = v.type[i];
    if ((t == TokenType::Control || t == TokenType::UserDefined || t == TokenType::Unknown) && !v.text[i].empty()) {
      v.specials.push_back(i);
    }
  }
  std::stable_sort(v.specials.begin(), v.specials.end(),
                   [&](int32_t a, int32_t b) { return v.text[a].size() > v.text[b].size(); });
  // End of generation: EOS, EOT, and the end-of-turn markers of the chat formats we serve.
  v.end_of_generation.assign(n, false);
  for (const char* key : {"tokenizer.ggml.eos_token_id", "tokenizer.ggml.eot_token_id", "tokenizer.ggml.eom_token_id"}) {
    const int32_t id = optional_id(f, key, n);
    if (id >= 0) v.end_of_generation[id] = true;
  }
  for (const char* marker : {"<|im_end|>", "<|eot_id|>", "<|end_of_text|>", "<|endoftext|>", "<|end|>", "<end_of_turn>", "<|eom_id|>", "<｜end▁of▁sentence｜>"}) {
    const int32_t id = v.find(marker);
    if (id >= 0 && v.type[id] == TokenType::Control) v.end_of_generation[id] = true;
  }
  return v;
}

}  // namespace

std::unique_ptr<Tokenizer> Tokenizer::from_gguf(const GgufFile& f) {
  if (!f.has("tokenizer.ggml.model")) {
    throw std::runtime_error(f.path() + ": no tokenizer metadata (missing 'tokenizer.ggml.model')");
  }
  const std::string model = f.get_string("tokenizer.ggml.model");
  if (model == "llama") return make_spm_tokenizer(read_vocab(f, true));
  if (model == "gpt2") {
    const std::vector<std::string> empty;
    const auto& merges = f.has("tokenizer.ggml.merges") ? f.get_string_array("tokenizer.ggml.merges") : empty;
    return make_bpe_tokenizer(read_vocab(f, false), merges, f.get_string("tokenizer.ggml.pre", "default"));
  }
  throw std::runtime_error(f.path() + ": unsupported tokenizer.ggml.model '" + model + "' (supported: llama, gpt2)");
}

std::vector<Fragment> VocabTokenizer::partition(std::string_view text, bool parse_special) const {
  std::vector<Fragment> fragments;
  if (!text.empty()) fragments.push_back({false, -1, text});
  std::vector<Fragment> next;
  for (const int32_t id : vocab_.specials) {
    // Without parse_special only user-defined tokens are split out (llama.cpp's behaviour).
    if (!parse_special && vocab_.type[id] != TokenType::UserDefined) continue;
    const std::string& special = vocab_.text[id];
    next.clear();
    for (const Fragment& fr : fragments) {
      if (fr.is_token || fr.text.find(special) == std::string_view::npos) {
        next.push_back(fr);
        continue;
      }
      size_t start = 0, at;
      while ((at = fr.text.find(special, start)) != std::string_view::npos) {
        if (at > start) next.push_back({false, -1, fr.text.substr(start, at - start)});
        next.push_back({true, id, {}});
        start = at + special.size();
      }
      if (start < fr.text.size()) next.push_back({false, -1, fr.text.substr(start)});
    }
    fragments.swap(next);
  }
  return fragments;
}

std::vector<int32_t> VocabTokenizer::encode(std::string_view text, bool add_special, bool parse_special) const {
  std::vector<int32_t> out;
  if (add_special && vocab_.add_bos) out.push_back(vocab_.bos);
  bool after_special = true;
  for (const Fragment& fr : partition(text, parse_special)) {
    if (fr.is_token) {
      out.push_back(fr.token);
      after_special = true;
    } else {
      encode_text(fr.text, after_special, out);
      after_special = false;
    }
  }
  if (add_special && vocab_.add_eos) out.push_back(vocab_.eos);
  return out;
}

std::string VocabTokenizer::token_to_piece(int32_t token, bool render_special) const {
  if (token < 0 || token >= n_vocab()) return {};
  const std::string& t = vocab_.text[token];
  switch (vocab_.type[token]) {
    case TokenType::Control: return render_special ? t : std::string();
    case TokenType::UserDefined: return t;
    case TokenType::Unused: return {};
    case TokenType::Unknown: return "\xe2\x96\x85";  // U+2585, llama.cpp's rendering of <unk>
    case TokenType::Byte:
      if (t.size() == 6 && t.rfind("<0x", 0) == 0) return std::string(1, static_cast<char>(std::stoi(t.substr(3, 2), nullptr, 16)));
      return t;
    default: return normal_piece(t);
  }
}

std::string VocabTokenizer::decode(const std::vector<int32_t>& tokens, bool render_special) const {
  std::string out;
  for (size_t i = 0; i < tokens.size(); ++i) {
    std::string piece = token_to_piece(tokens[i], render_special);
    // The space the encoder put in front of the text is not part of it.
    if (i == 0 && vocab_.add_space_prefix && !piece.empty() && piece[0] == ' ') piece.erase(0, 1);
    out += piece;
  }
  return out;
}

bool VocabTokenizer::is_end_of_generation(int32_t token) const {
  return token >= 0 && token < n_vocab() && vocab_.end_of_generation[token];
}

bool VocabTokenizer::is_control(int32_t token) const {
  return token >= 0 && token < n_vocab() && vocab_.type[token] == TokenType::Control;
}

const std::string& VocabTokenizer::token_text(int32_t token) const {
  static const std::string kNone;
  return token >= 0 && token < n_vocab() ? vocab_.text[token] : kNone;
}

std::string TextStreamer::push(int32_t token) {
  pending_ += tokenizer_.token_to_piece(token);
  const size_t complete = utf8_complete_prefix(pending_);
  std::string out = pending_.substr(0, complete);
  pending_.erase(0, complete);
  return out;
}

std::string TextStreamer::flush() {
  std::string out;
  if (!pending_.empty()) out = "\xef\xbf\xbd";  // an incomplete character: U+FFFD
  pending_.clear();
  return out;
}

}  // namespace tandem
