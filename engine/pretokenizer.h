// Splits text into words before byte-level BPE, with the regexes a vocabulary's
// tokenizer.ggml.pre names. Several regexes apply in turn: each one splits every piece left by
// the previous one into its matches and the text between them.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class Pretokenizer {
 public:
  // Throws std::runtime_error naming `pre` when it is not a known pre-tokenizer.
  explicit Pretokenizer(const std::string& pre);
  ~Pretokenizer();
  Pretokenizer(const Pretokenizer&) = delete;
  Pretokenizer& operator=(const Pretokenizer&) = delete;

  std::vector<std::string> split(std::string_view text) const;
  // Whether whole words that are vocabulary tokens skip the merges (llama3-style vocabularies).
  bool ignore_merges() const { return ignore_merges_; }

 private:
  struct Regex;
  std::vector<std::unique_ptr<Regex>> regexes_;
  bool ignore_merges_ = false;
};

// The pre-tokenizer names this build knows (for error messages and docs).
std::vector<std::string> known_pretokenizers();

}  // namespace tandem
