#include "common/text.h"

#include <cstdint>

#include <fmt/format.h>

namespace fedcal {
namespace {

constexpr std::string_view kReplacement = "\xEF\xBF\xBD";  // U+FFFD

// Length of the valid UTF-8 character at the start of `s` (RFC 3629), or 0 if it is not one.
size_t valid_char_length(std::string_view s) {
  const auto byte = [&](size_t i) { return static_cast<uint8_t>(s[i]); };
  const uint8_t lead = byte(0);
  if (lead < 0x80) return 1;
  size_t length;
  uint8_t low = 0x80, high = 0xBF;  // the allowed range of the second byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    length = 2;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    length = 3;
    if (lead == 0xE0) low = 0xA0;   // no overlong forms
    if (lead == 0xED) high = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    length = 4;
    if (lead == 0xF0) low = 0x90;   // no overlong forms
    if (lead == 0xF4) high = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  if (s.size() < length || byte(1) < low || byte(1) > high) return 0;
  for (size_t i = 2; i < length; ++i) {
    if (byte(i) < 0x80 || byte(i) > 0xBF) return 0;
  }
  return length;
}

}  // namespace

std::optional<size_t> first_non_text_byte(std::string_view bytes) {
  for (size_t at = 0; at < bytes.size();) {
    const size_t length = valid_char_length(bytes.substr(at));
    if (length == 0 || bytes[at] == '\0') return at;
    at += length;
  }
  return std::nullopt;
}

std::string sanitize_utf8(std::string_view bytes, size_t max_bytes) {
  std::string out;
  out.reserve(std::min(bytes.size(), max_bytes));
  while (!bytes.empty()) {
    const size_t length = valid_char_length(bytes);
    const std::string_view piece = length > 0 ? bytes.substr(0, length) : kReplacement;
    if (out.size() + piece.size() > max_bytes) break;
    out += piece;
    bytes.remove_prefix(length > 0 ? length : 1);
  }
  return out;
}

std::string escape_controls(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  for (size_t i = 0; i < text.size(); ++i) {
    const auto c = static_cast<uint8_t>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c == '\r') {
      out += "\\r";
    } else if (c == '\t') {
      out += "\\t";
    } else if (c == '\\') {
      out += "\\\\";
    } else if (c < 0x20 || c == 0x7F) {
      out += fmt::format("\\x{:02x}", c);
    } else if (c == 0xC2 && i + 1 < text.size() && static_cast<uint8_t>(text[i + 1]) >= 0x80 &&
               static_cast<uint8_t>(text[i + 1]) <= 0x9F) {
      out += fmt::format("\\x{:02x}", static_cast<uint8_t>(text[++i]));  // a C1 control (U+0080..U+009F)
    } else {
      out += static_cast<char>(c);
    }
  }
  return out;
}

}  // namespace fedcal
