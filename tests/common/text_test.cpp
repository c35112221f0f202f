#include "common/text.h"

#include <doctest/doctest.h>

#include <string>

namespace fedcal {
namespace {

const std::string kReplacement = "\xEF\xBF\xBD";

TEST_CASE("sanitize_utf8: valid text is kept, every invalid sequence becomes U+FFFD") {
  const std::string valid = "caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80 \xE4\xB8\xAD";  // café € 😀 中
  CHECK(sanitize_utf8(valid, 1000) == valid);
  CHECK(sanitize_utf8("\xFF\xFE", 100) == kReplacement + kReplacement);                     // not lead bytes
  CHECK(sanitize_utf8("\xC0\xAF", 100) == kReplacement + kReplacement);                     // overlong '/'
  CHECK(sanitize_utf8("\xE0\x80\xAF", 100) == kReplacement + kReplacement + kReplacement);  // overlong, 3 bytes
  CHECK(sanitize_utf8("\xED\xA0\x80", 100) == kReplacement + kReplacement + kReplacement);  // a surrogate
  CHECK(sanitize_utf8("\xF4\x90\x80\x80", 100) == kReplacement + kReplacement + kReplacement + kReplacement);  // > U+10FFFF
  CHECK(sanitize_utf8("ab\xE2\x82", 100) == "ab" + kReplacement + kReplacement);                               // cut short
  CHECK(sanitize_utf8(std::string("a\0b", 3), 100) == std::string("a\0b", 3));  // NUL is valid UTF-8
}

TEST_CASE("sanitize_utf8: cut at a character boundary, never inside one") {
  std::string euros;
  for (int i = 0; i < 43; ++i) euros += "\xE2\x82\xAC";  // 129 bytes
  const std::string cut = sanitize_utf8(euros, 128);
  CHECK(cut.size() == 126);
  CHECK(cut == euros.substr(0, 126));
  CHECK(sanitize_utf8("abc", 2) == "ab");
  CHECK(sanitize_utf8("\xFF", 2).empty());  // U+FFFD takes 3 bytes
}

TEST_CASE("escape_controls: one line, no terminal escapes") {
  CHECK(escape_controls("ok\nround 99: done") == "ok\\nround 99: done");
  CHECK(escape_controls("\x1B[31mred\x1B[0m") == "\\x1b[31mred\\x1b[0m");
  CHECK(escape_controls("a\\b\tc\r\x7F") == "a\\\\b\\tc\\r\\x7f");
  CHECK(escape_controls("\xC2\x9B"
                        "2J") == "\\x9b2J");                                         // a C1 control sequence introducer
  CHECK(escape_controls("caf\xC3\xA9 \xE2\x82\xAC") == "caf\xC3\xA9 \xE2\x82\xAC");  // other text as it is
}

}  // namespace
}  // namespace fedcal
