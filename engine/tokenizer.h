// Text <-> token ids, built from a GGUF's tokenizer.* metadata.
// Supports SentencePiece-style (`llama`, with byte fallback) and GPT-2 byte-level BPE (`gpt2`,
// pre-tokenizer regex chosen by tokenizer.ggml.pre), matching llama.cpp's results.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace tandem {

class GgufFile;

class Tokenizer {
 public:
  // Throws std::runtime_error naming the file and key when the metadata is missing or unusable
  // (e.g. an unknown tokenizer.ggml.model or tokenizer.ggml.pre).
  static std::unique_ptr<Tokenizer> from_gguf(const GgufFile& file);
  virtual ~Tokenizer() = default;

  // add_special: prepend BOS / append EOS as the metadata's add_bos_token/add_eos_token say.
  // parse_special: text like "<|im_start|>" becomes the control token instead of plain text.
  virtual std::vector<int32_t> encode(std::string_view text, bool add_special,
                                      bool parse_special) const = 0;
  // The bytes a token stands for (byte tokens give their byte; SPM's U+2581 becomes a space;
  // control tokens give "" unless render_special).
  virtual std::string token_to_piece(int32_t token, bool render_special = false) const = 0;
  // Concatenated pieces, with SPM's leading space of the first token removed when the
  // metadata says a space is added (llama.cpp's default detokenize behaviour).
  virtual std::string decode(const std::vector<int32_t>& tokens, bool render_special = false) const = 0;

  virtual int32_t n_vocab() const = 0;
  virtual int32_t bos() const = 0;  // -1 when none
  virtual int32_t eos() const = 0;  // -1 when none
  // End of generation: EOS, EOT, <|im_end|> and the like.
  virtual bool is_end_of_generation(int32_t token) const = 0;
  virtual bool is_control(int32_t token) const = 0;
  virtual const std::string& token_text(int32_t token) const = 0;  // raw vocab string
};

// Turns a stream of token ids into text that is always valid UTF-8: bytes of a character
// split across tokens are held back until the character is complete.
class TextStreamer {
 public:
  explicit TextStreamer(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  // Text that became complete with this token (possibly empty). Pieces are appended as they
  // are: the streamer continues a text, so no leading space is removed.
  std::string push(int32_t token);
  // Whatever is still held back (incomplete UTF-8 is replaced by U+FFFD).
  std::string flush();

 private:
  const Tokenizer& tokenizer_;
  std::string pending_;
};

}  // namespace tandem
