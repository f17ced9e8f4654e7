// Shared machinery of the SPM and BPE tokenizers: the vocabulary read from GGUF metadata,
// special-token partitioning, BOS/EOS handling and detokenization.
#pragma once

#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "engine/tokenizer.h"

namespace tandem {

enum class TokenType : int32_t { Undefined = 0, Normal = 1, Unknown = 2, Control = 3, UserDefined = 4, Unused = 5, Byte = 6 };

struct Vocab {
  std::vector<std::string> text;
  std::vector<float> score;
  std::vector<TokenType> type;
  std::unordered_map<std::string, int32_t> id_of;
  int32_t bos = -1, eos = -1, unk = -1;
  bool add_bos = false, add_eos = false, add_space_prefix = false;
  std::vector<int32_t> specials;  // control, user-defined and unknown tokens, longest text first
  std::vector<bool> end_of_generation;

  int32_t find(std::string_view s) const {
    const auto it = id_of.find(std::string(s));
    return it == id_of.end() ? -1 : it->second;
  }
};

// A piece of the input: raw text still to tokenize, or a special token already recognised.
struct Fragment {
  bool is_token = false;
  int32_t token = -1;
  std::string_view text;
};

class VocabTokenizer : public Tokenizer {
 public:
  explicit VocabTokenizer(Vocab vocab) : vocab_(std::move(vocab)) {}

  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override;
  std::string token_to_piece(int32_t token, bool render_special) const override;
  std::string decode(const std::vector<int32_t>& tokens, bool render_special) const override;
  int32_t n_vocab() const override { return static_cast<int32_t>(vocab_.text.size()); }
  int32_t bos() const override { return vocab_.bos; }
  int32_t eos() const override { return vocab_.eos; }
  bool is_end_of_generation(int32_t token) const override;
  bool is_control(int32_t token) const override;
  const std::string& token_text(int32_t token) const override;

 protected:
  // Tokenizes one raw-text fragment; after_special: it follows a special token or starts the text.
  virtual void encode_text(std::string_view text, bool after_special, std::vector<int32_t>& out) const = 0;
  // The bytes of a NORMAL token.
  virtual std::string normal_piece(const std::string& text) const = 0;

  Vocab vocab_;

 private:
  std::vector<Fragment> partition(std::string_view text, bool parse_special) const;
};

std::unique_ptr<Tokenizer> make_spm_tokenizer(Vocab vocab);
std::unique_ptr<Tokenizer> make_bpe_tokenizer(Vocab vocab, const std::vector<std::string>& merges,
                                              const std::string& pre);

}  // namespace tandem
