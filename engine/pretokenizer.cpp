#include "engine/pretokenizer.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <map>
#include <stdexcept>

#include "engine/unicode.h"

namespace tandem {
namespace {

// Regexes of the pre-tokenizers, as the models' tokenizer.json files define them (the
// case-insensitive contractions spelled out so every engine reads them alike).
const char* const kGpt2 = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)";
const char* const kLlama3 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kQwen2 =
    "(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}|"
    " ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
const char* const kCjk = "[\\x{4E00}-\\x{9FA5}\\x{0800}-\\x{4E00}\\x{AC00}-\\x{D7FF}]+";
const char* const kDeepseekLetters =
    "\\s?[A-Za-z\\x{B5}\\x{C0}-\\x{D6}\\x{D8}-\\x{F6}\\x{F8}-\\x{1BA}\\x{1BC}-\\x{1BF}\\x{1C4}-\\x{293}"
    "\\x{295}-\\x{2AF}\\x{370}-\\x{373}\\x{376}\\x{377}\\x{37B}-\\x{37D}\\x{37F}\\x{386}\\x{388}-\\x{38A}"
    "\\x{38C}\\x{38E}-\\x{3A1}\\x{3A3}-\\x{3F5}\\x{3F7}-\\x{481}\\x{48A}-\\x{52F}\\x{531}-\\x{556}"
    "\\x{10A0}-\\x{10C5}\\x{13A0}-\\x{13F5}\\x{13F8}-\\x{13FD}\\x{1C90}-\\x{1CBA}\\x{1CBD}-\\x{1CBF}"
    "\\x{1D00}-\\x{1D2B}\\x{1D6B}-\\x{1D77}\\x{1D79}-\\x{1D9A}\\x{1E00}-\\x{1F15}\\x{1F18}-\\x{1F1D}"
    "\\x{1F20}-\\x{1F45}\\x{1F48}-\\x{1F4D}\\x{1F50}-\\x{1F57}\\x{1F59}\\x{1F5B}\\x{1F5D}\\x{1F5F}-\\x{1F7D}"
    "\\x{1F80}-\\x{1FB4}\\x{1FB6}-\\x{1FBC}\\x{1FBE}\\x{1FC2}-\\x{1FC4}\\x{1FC6}-\\x{1FCC}\\x{1FD0}-\\x{1FD3}"
    "\\x{1FD6}-\\x{1FDB}\\x{1FE0}-\\x{1FEC}\\x{1FF2}-\\x{1FF4}\\x{1FF6}-\\x{1FFC}\\x{2102}\\x{2107}"
    "\\x{210A}-\\x{2113}\\x{2115}\\x{2119}-\\x{211D}\\x{2124}\\x{2126}\\x{2128}\\x{212A}-\\x{212D}"
    "\\x{212F}-\\x{2134}\\x{2139}\\x{213C}-\\x{213F}\\x{2145}-\\x{2149}\\x{214E}\\x{2183}\\x{2184}"
    "\\x{2C00}-\\x{2C7B}\\x{2C7E}-\\x{2CE4}\\x{2CEB}-\\x{2CEE}\\x{2CF2}\\x{2CF3}\\x{A640}-\\x{A66D}"
    "\\x{A680}-\\x{A69B}\\x{A722}-\\x{A76F}\\x{A771}-\\x{A787}\\x{A78B}-\\x{A78E}\\x{AB70}-\\x{ABBF}"
    "\\x{FB00}-\\x{FB06}\\x{FB13}-\\x{FB17}\\x{FF21}-\\x{FF3A}\\x{FF41}-\\x{FF5A}\\x{10400}-\\x{1044F}"
    "\\x{104B0}-\\x{104D3}\\x{104D8}-\\x{104FB}\\x{10C80}-\\x{10CB2}\\x{10CC0}-\\x{10CF2}\\x{118A0}-\\x{118DF}"
    "\\x{1E900}-\\x{1E943}]+";
const char* const kDeepseekPunct = "\\s?[!-/:-~\\x{FF01}-\\x{FF0F}\\x{FF1A}-\\x{FF5E}\\x{2018}-\\x{201F}\\x{3000}-\\x{3002}]+";

struct PreSpec {
  std::vector<const char*> regexes;
  bool ignore_merges = false;
};

const std::map<std::string, PreSpec>& specs() {
  static const std::map<std::string, PreSpec> m = {
      {"default", {{"[\\p{P}\\$\\+<=>\\^~\\|]+", kGpt2, "\\p{N}+", "[0-9][0-9][0-9]"}}},
      {"gpt-2", {{kGpt2}}},
      {"gpt2", {{kGpt2}}},
      {"mpt", {{kGpt2}}},
      {"olmo", {{kGpt2}}},
      {"jais", {{kGpt2}}},
      {"phi-2", {{kGpt2}}},
      {"llama3", {{kLlama3}, true}},
      {"llama-v3", {{kLlama3}, true}},
      {"llama-bpe", {{kLlama3}, true}},
      {"dbrx", {{kLlama3}}},
      {"smaug-bpe", {{kLlama3}}},
      {"qwen2", {{kQwen2}}},
      {"deepseek-r1-qwen", {{kQwen2}}},
      {"stablelm2", {{kQwen2}}},
      {"megrez", {{kQwen2}}},
      {"deepseek-llm", {{"[\\r\\n]", kDeepseekLetters, kDeepseekPunct, "\\s+$", kCjk, "\\p{N}+"}}},
      {"deepseek-coder", {{"[\\r\\n]", "\\s?\\p{L}+", "\\s?\\p{P}+", kCjk, "\\p{N}"}}},
      {"falcon", {{"[\\p{P}\\$\\+<=>\\^~\\|`]+", kGpt2, "[0-9][0-9][0-9]"}}},
      {"starcoder", {{"\\p{N}", kGpt2}}},
      {"refact", {{"\\p{N}", kGpt2}}},
      {"command-r", {{"\\p{N}", kGpt2}}},
      {"smollm", {{"\\p{N}", kGpt2}}},
      {"codeshell", {{"\\p{N}", kGpt2}}},
      {"exaone", {{"\\p{N}", kGpt2}}},
  };
  return m;
}

}  // namespace

struct Pretokenizer::Regex {
  pcre2_code* code = nullptr;
  pcre2_match_data* match = nullptr;
  ~Regex() {
    pcre2_match_data_free(match);
    pcre2_code_free(code);
  }
};

Pretokenizer::Pretokenizer(const std::string& pre) {
  const auto it = specs().find(pre);
  if (it == specs().end()) {
    std::string known;
    for (const auto& [name, spec] : specs()) known += (known.empty() ? "" : ", ") + name;
    throw std::runtime_error("unknown pre-tokenizer tokenizer.ggml.pre = '" + pre + "' (known: " + known + ")");
  }
  ignore_merges_ = it->second.ignore_merges;
  for (const char* pattern : it->second.regexes) {
    auto r = std::make_unique<Regex>();
    int err = 0;
    PCRE2_SIZE err_off = 0;
    // UCP: \s, \p{..} and friends follow Unicode; DOLLAR_ENDONLY: '$' only at the very end.
    r->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern), PCRE2_ZERO_TERMINATED,
                            PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY | PCRE2_NO_UTF_CHECK, &err, &err_off, nullptr);
    if (!r->code) {
      PCRE2_UCHAR msg[256];
      pcre2_get_error_message(err, msg, sizeof msg);
      throw std::logic_error("pre-tokenizer regex does not compile: " + std::string(reinterpret_cast<char*>(msg)));
    }
    pcre2_jit_compile(r->code, PCRE2_JIT_COMPLETE);  // optional speed-up; falls back silently
    r->match = pcre2_match_data_create_from_pattern(r->code, nullptr);
    regexes_.push_back(std::move(r));
  }
}

Pretokenizer::~Pretokenizer() = default;

std::vector<std::string> Pretokenizer::split(std::string_view text) const {
  std::vector<std::string> pieces{std::string(text)};
  for (const auto& r : regexes_) {
    std::vector<std::string> next;
    for (const std::string& piece : pieces) {
      // Each piece is matched on its own: lookaheads and '$' see the piece's end.
      const auto* subject = reinterpret_cast<PCRE2_SPTR>(piece.data());
      // Malformed UTF-8 makes the match fail, so the piece passes through whole (BPE still
      // encodes its bytes).
      const uint32_t options = utf8_valid(piece) ? PCRE2_NO_UTF_CHECK : 0;
      size_t start = 0, gap_start = 0;
      while (start < piece.size()) {
        const int rc = pcre2_match(r->code, subject, piece.size(), start, options, r->match, nullptr);
        if (rc < 0) break;
        const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(r->match);
        if (ov[1] == ov[0]) {  // empty match: step one character
          start = ov[0] + 1;
          while (start < piece.size() && (static_cast<uint8_t>(piece[start]) & 0xC0) == 0x80) ++start;
          continue;
        }
        if (ov[0] > gap_start) next.push_back(piece.substr(gap_start, ov[0] - gap_start));
        next.push_back(piece.substr(ov[0], ov[1] - ov[0]));
        start = gap_start = ov[1];
      }
      if (gap_start < piece.size()) next.push_back(piece.substr(gap_start));
    }
    pieces = std::move(next);
  }
  return pieces;
}

std::vector<std::string> known_pretokenizers() {
  std::vector<std::string> names;
  for (const auto& [name, spec] : specs()) names.push_back(name);
  return names;
}

}  // namespace tandem
