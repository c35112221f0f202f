// Text that comes from outside the process (network messages, a database an older version wrote,
// files) is bytes until proven otherwise. These two functions are where it becomes safe to store
// as JSON and safe to print.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace fedcal {

// Valid UTF-8 of at most `max_bytes`: every invalid sequence (bad lead or continuation byte,
// overlong form, surrogate, above U+10FFFF, cut short) becomes U+FFFD, and the result is cut only
// at a character boundary.
std::string sanitize_utf8(std::string_view bytes, size_t max_bytes);

// The offset of the first byte that keeps `bytes` from being UTF-8 text (the start of an invalid
// sequence, or a NUL: a binary file is not text), or nullopt.
std::optional<size_t> first_non_text_byte(std::string_view bytes);

// `text` on one line and without terminal escapes: control characters (C0, DEL and the C1 range
// U+0080..U+009F) are written as \n, \r, \t or \xNN, and a backslash as \\.
std::string escape_controls(std::string_view text);

}  // namespace fedcal
