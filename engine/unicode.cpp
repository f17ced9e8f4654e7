#include "engine/unicode.h"

#include <array>

namespace tandem {

int utf8_sequence_length(uint8_t lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xE0) == 0xC0) return 2;
  if ((lead & 0xF0) == 0xE0) return 3;
  if ((lead & 0xF8) == 0xF0) return 4;
  return 1;
}

void append_utf8(uint32_t cpt, std::string& out) {
  if (cpt < 0x80) {
    out += static_cast<char>(cpt);
  } else if (cpt < 0x800) {
    out += static_cast<char>(0xC0 | (cpt >> 6));
    out += static_cast<char>(0x80 | (cpt & 0x3F));
  } else if (cpt < 0x10000) {
    out += static_cast<char>(0xE0 | (cpt >> 12));
    out += static_cast<char>(0x80 | ((cpt >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cpt & 0x3F));
  } else {
    out += static_cast<char>(0xF0 | (cpt >> 18));
    out += static_cast<char>(0x80 | ((cpt >> 12) & 0x3F));
    out += static_cast<char>(0x80 | ((cpt >> 6) & 0x3F));
    out += static_cast<char>(0x80 | (cpt & 0x3F));
  }
}

bool utf8_valid(std::string_view text) {
  size_t i = 0;
  while (i < text.size()) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c < 0x80) {
      ++i;
      continue;
    }
    const int len = utf8_sequence_length(c);
    if (len == 1 || i + len > text.size()) return false;
    uint32_t cpt = c & (0xFF >> (len + 1));
    for (int k = 1; k < len; ++k) {
      const auto cc = static_cast<uint8_t>(text[i + k]);
      if ((cc & 0xC0) != 0x80) return false;
      cpt = (cpt << 6) | (cc & 0x3F);
    }
    static constexpr uint32_t kMin[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cpt < kMin[len] || cpt > 0x10FFFF || (cpt >= 0xD800 && cpt <= 0xDFFF)) return false;
    i += len;
  }
  return true;
}

size_t utf8_complete_prefix(std::string_view text) {
  // Look back at most 3 bytes for the start of a sequence that runs past the end.
  const size_t n = text.size();
  for (size_t back = 1; back <= 4 && back <= n; ++back) {
    const auto c = static_cast<uint8_t>(text[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte: keep looking for the lead
    const int len = utf8_sequence_length(c);
    return static_cast<size_t>(len) > back ? n - back : n;
  }
  return n;
}

namespace {

// GPT-2's table: printable Latin-1 bytes map to themselves, the others to 256 + i in order.
struct ByteMap {
  std::array<std::string, 256> to_unicode;
  std::array<int, 512> from_unicode{};
  ByteMap() {
    from_unicode.fill(-1);
    int next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 0x21 && b <= 0x7E) || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
      const int cpt = printable ? b : next++;
      append_utf8(static_cast<uint32_t>(cpt), to_unicode[b]);
      from_unicode[cpt] = b;
    }
  }
};

const ByteMap& byte_map() {
  static const ByteMap m;
  return m;
}

}  // namespace

const std::string& byte_to_unicode(uint8_t byte) { return byte_map().to_unicode[byte]; }

int unicode_to_byte(uint32_t cpt) { return cpt < 512 ? byte_map().from_unicode[cpt] : -1; }

uint32_t next_codepoint(std::string_view text, size_t& pos) {
  const auto c = static_cast<uint8_t>(text[pos]);
  const int len = utf8_sequence_length(c);
  if (len == 1 || pos + len > text.size()) {
    ++pos;
    return c;
  }
  uint32_t cpt = c & (0xFF >> (len + 1));
  for (int i = 1; i < len; ++i) {
    const auto cc = static_cast<uint8_t>(text[pos + i]);
    if ((cc & 0xC0) != 0x80) {  // broken sequence: take the lead byte alone
      ++pos;
      return c;
    }
    cpt = (cpt << 6) | (cc & 0x3F);
  }
  pos += len;
  return cpt;
}

}  // namespace tandem
