// UTF-8 helpers and GPT-2's byte <-> printable-codepoint mapping used by byte-level BPE.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace tandem {

// Length in bytes of the UTF-8 sequence starting with `lead` (1 for invalid lead bytes).
int utf8_sequence_length(uint8_t lead);

// Appends the UTF-8 encoding of a codepoint.
void append_utf8(uint32_t cpt, std::string& out);

// Whether text is well-formed UTF-8 (no overlongs, surrogates or values past U+10FFFF).
bool utf8_valid(std::string_view text);

// Bytes of `text` whose UTF-8 sequences are complete: a trailing partial sequence is left out.
size_t utf8_complete_prefix(std::string_view text);

// Byte-level BPE: each byte is shown as one printable codepoint (GPT-2's bytes_to_unicode).
const std::string& byte_to_unicode(uint8_t byte);   // UTF-8 of the codepoint
// Inverse mapping of one codepoint; -1 when the codepoint is not a mapped byte.
int unicode_to_byte(uint32_t cpt);

// Decodes one codepoint at text[pos]; advances pos. Invalid bytes decode as themselves.
uint32_t next_codepoint(std::string_view text, size_t& pos);

}  // namespace tandem
