// SentencePiece-style tokenization (tokenizer.ggml.model = "llama"): spaces become U+2581,
// adjacent pieces merge greedily by vocabulary score, and anything left that is not a token
// falls back to byte tokens <0xXX>.
#include <cstdio>
#include <queue>

#include "engine/tokenizer_impl.h"
#include "engine/unicode.h"

namespace tandem {
namespace {

constexpr std::string_view kSpace = "\xe2\x96\x81";  // U+2581

struct Symbol {
  int prev, next;
  size_t offset, length;
};

struct Bigram {
  int left, right;
  float score;
  size_t length;
  // Highest score first; on equal scores the leftmost pair first.
  bool operator<(const Bigram& o) const { return score < o.score || (score == o.score && left > o.left); }
};

class SpmTokenizer final : public VocabTokenizer {
 public:
  explicit SpmTokenizer(Vocab v) : VocabTokenizer(std::move(v)) {
    for (int b = 0; b < 256; ++b) {
      char name[8];
      std::snprintf(name, sizeof name, "<0x%02X>", b);
      int32_t id = vocab_.find(name);
      if (id < 0) id = vocab_.find(std::string(1, static_cast<char>(b)));
      byte_token_[b] = id;
    }
  }

 protected:
  void encode_text(std::string_view text, bool after_special, std::vector<int32_t>& out) const override {
    std::string s;
    if (vocab_.add_space_prefix && after_special) s += kSpace;
    for (char c : text) {
      if (c == ' ') s += kSpace; else s += c;
    }
    Session(*this, s).run(out);
  }

  std::string normal_piece(const std::string& text) const override {
    std::string out;
    for (size_t i = 0; i < text.size();) {
      if (text.compare(i, kSpace.size(), kSpace) == 0) {
        out += ' ';
        i += kSpace.size();
      } else {
        out += text[i++];
      }
    }
    return out;
  }

 private:
  // One encode call: the symbols of the text and the queue of candidate merges.
  class Session {
   public:
    Session(const SpmTokenizer& t, const std::string& s) : tok_(t), text_(s) {}

    void run(std::vector<int32_t>& out) {
      for (size_t off = 0; off < text_.size();) {
        const size_t len = std::min<size_t>(utf8_sequence_length(static_cast<uint8_t>(text_[off])), text_.size() - off);
        const int idx = static_cast<int>(symbols_.size());
        symbols_.push_back({idx - 1, off + len < text_.size() ? idx + 1 : -1, off, len});
        off += len;
      }
      for (size_t i = 1; i < symbols_.size(); ++i) try_add(static_cast<int>(i) - 1, static_cast<int>(i));
      while (!queue_.empty()) {
        const Bigram b = queue_.top();
        queue_.pop();
        Symbol& l = symbols_[b.left];
        Symbol& r = symbols_[b.right];
        if (l.length == 0 || r.length == 0 || l.length + r.length != b.length) continue;  // stale
        l.length += r.length;
        r.length = 0;
        l.next = r.next;
        if (r.next >= 0) symbols_[r.next].prev = b.left;
        try_add(l.prev, b.left);
        try_add(b.left, l.next);
      }
      for (int i = symbols_.empty() ? -1 : 0; i != -1; i = symbols_[i].next) {
        resegment(symbols_[i].offset, symbols_[i].length, out);
      }
    }

   private:
    void try_add(int left, int right) {
      if (left < 0 || right < 0) return;
      const std::string_view piece(text_.data() + symbols_[left].offset, symbols_[left].length + symbols_[right].length);
      const int32_t id = tok_.vocab_.find(piece);
      if (id < 0) return;
      queue_.push({left, right, tok_.vocab_.score[id], piece.size()});
    }

    // A final symbol: its token, else its bytes. (Merges only ever form vocabulary tokens, so
    // a symbol that is not a token is a single character without a piece of its own.)
    void resegment(size_t offset, size_t length, std::vector<int32_t>& out) const {
      const std::string_view piece(text_.data() + offset, length);
      const int32_t id = tok_.vocab_.find(piece);
      if (id >= 0) {
        out.push_back(id);
        return;
      }
      for (char c : piece) {
        const int32_t b = tok_.byte_token_[static_cast<uint8_t>(c)];
        if (b >= 0) out.push_back(b);
      }
    }

    const SpmTokenizer& tok_;
    const std::string& text_;
    std::vector<Symbol> symbols_;
    std::priority_queue<Bigram> queue_;
  };

  int32_t byte_token_[256];
};

}  // namespace

std::unique_ptr<Tokenizer> make_spm_tokenizer(Vocab vocab) { return std::make_unique<SpmTokenizer>(std::move(vocab)); }

}  // namespace tandem
