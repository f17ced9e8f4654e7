// Byte-level BPE (tokenizer.ggml.model = "gpt2"): the text is split into words by the
// pre-tokenizer, each word's bytes are shown as printable codepoints, and adjacent symbols
// merge in the order of the vocabulary's merge list.
#include <queue>
#include <stdexcept>
#include <unordered_map>

#include "engine/pretokenizer.h"
#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"

namespace tandem {
namespace {

struct Symbol {
  int prev, next;
  size_t offset, length;
};

struct Bigram {
  int left, right;
  int rank;
  size_t length;
  // Lowest rank first; on equal ranks the leftmost pair first.
  bool operator<(const Bigram& o) const { return rank > o.rank || (rank == o.rank && left > o.left); }
};

class BpeTokenizer final : public VocabTokenizer {
 public:
  BpeTokenizer(Vocab v, const std::vector<std::string>& merges, const std::string& pre)
      : VocabTokenizer(std::move(v)), pretokenizer_(pre) {
    ranks_.reserve(merges.size());
    for (size_t i = 0; i < merges.size(); ++i) {
      if (merges[i].find(' ', 1) == std::string::npos) {
        throw std::runtime_error("tokenizer.ggml.merges[" + std::to_string(i) + "] = '" + merges[i] + "' is not 'left right'");
      }
      ranks_.emplace(merges[i], static_cast<int>(i));  // key: "left right"
    }
  }

 protected:
  void encode_text(std::string_view text, bool /*after_special*/, std::vector<int32_t>& out) const override {
    std::string word;
    for (const std::string& raw : pretokenizer_.split(text)) {
      word.clear();
      for (char c : raw) word += byte_to_unicode(static_cast<uint8_t>(c));
      encode_word(word, out);
    }
  }

  std::string normal_piece(const std::string& text) const override {
    std::string out;
    for (size_t pos = 0; pos < text.size();) {
      const size_t start = pos;
      const uint32_t cpt = next_codepoint(text, pos);
      const int byte = unicode_to_byte(cpt);
      if (byte >= 0) out += static_cast<char>(byte);
      else out.append(text, start, pos - start);  // not a mapped byte: keep the character
    }
    return out;
  }

 private:
  int rank(std::string_view left, std::string_view right, std::string& key) const {
    key.assign(left);
    key += ' ';
    key += right;
    const auto it = ranks_.find(key);
    return it == ranks_.end() ? -1 : it->second;
  }

  void encode_word(const std::string& word, std::vector<int32_t>& out) const {
    if (pretokenizer_.ignore_merges()) {
      const int32_t id = vocab_.find(word);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
    }
    std::vector<Symbol> symbols;
    for (size_t off = 0; off < word.size();) {
      const size_t len = std::min<size_t>(utf8_sequence_length(static_cast<uint8_t>(word[off])), word.size() - off);
      const int idx = static_cast<int>(symbols.size());
      symbols.push_back({idx - 1, off + len < word.size() ? idx + 1 : -1, off, len});
      off += len;
    }
    std::priority_queue<Bigram> queue;
    std::string key;
    auto try_add = [&](int l, int r) {
      if (l < 0 || r < 0) return;
      const std::string_view a(word.data() + symbols[l].offset, symbols[l].length);
      const std::string_view b(word.data() + symbols[r].offset, symbols[r].length);
      const int rk = rank(a, b, key);
      if (rk >= 0) queue.push({l, r, rk, a.size() + b.size()});
    };
    for (size_t i = 1; i < symbols.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
    while (!queue.empty()) {
      const Bigram b = queue.top();
      queue.pop();
      Symbol& l = symbols[b.left];
      Symbol& r = symbols[b.right];
      if (l.length == 0 || r.length == 0 || l.length + r.length != b.length || l.next != b.right) continue;
      l.length += r.length;
      r.length = 0;
      l.next = r.next;
      if (r.next >= 0) symbols[r.next].prev = b.left;
      try_add(l.prev, b.left);
      try_add(b.left, l.next);
    }
    for (int i = symbols.empty() ? -1 : 0; i != -1; i = symbols[i].next) {
      const std::string_view piece(word.data() + symbols[i].offset, symbols[i].length);
      const int32_t id = vocab_.find(piece);
      if (id >= 0) {
        out.push_back(id);
        continue;
      }
      // Not a token: one token per byte (each byte is one printable codepoint here).
      for (size_t pos = 0; pos < piece.size();) {
        const size_t start = pos;
        next_codepoint(piece, pos);
        const int32_t byte_id = vocab_.find(piece.substr(start, pos - start));
        if (byte_id >= 0) out.push_back(byte_id);
      }
    }
  }

  Pretokenizer pretokenizer_;
  std::unordered_map<std::string, int> ranks_;
};

}  // namespace

std::unique_ptr<Tokenizer> make_bpe_tokenizer(Vocab vocab, const std::vector<std::string>& merges,
                                              const std::string& pre) {
  return std::make_unique<BpeTokenizer>(std::move(vocab), merges, pre);
}

}  // namespace tandem
