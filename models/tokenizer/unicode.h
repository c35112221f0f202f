// The Unicode a byte-level BPE tokenizer needs: UTF-8 decoding that keeps invalid bytes, the letter /
// number / white-space classes of the pre-tokenizer split patterns, and NFC normalization. The data is
// generated from Python's unicodedata (generate_unicode_tables.py, Unicode version in kUnicodeVersion).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace fedcal {

// Stands for one byte that is not part of a valid UTF-8 sequence (a stray continuation byte, a
// truncated or overlong sequence, a surrogate, a value past U+10FFFF). Outside Unicode, so it is no
// letter, number or space; the byte itself stays in the text, so nothing is lost.
inline constexpr char32_t kInvalidUtf8 = 0x110000;

struct CodePoint {
  char32_t value;   // kInvalidUtf8 for an invalid byte
  uint32_t offset;  // of its first byte in the text
  uint32_t length;  // in bytes, 1-4
};

std::vector<CodePoint> decode_utf8(std::string_view text);
void append_utf8(std::string& out, char32_t value);

bool is_letter(char32_t value);       // general category L*
bool is_number(char32_t value);       // general category N*
bool is_white_space(char32_t value);  // the White_Space property (what \s matches in Unicode regexes)

// Canonical composition (NFC) of `text`. Invalid bytes pass through unchanged, as starters.
std::string nfc(std::string_view text);

const char* unicode_version();

}  // namespace fedcal
