#include "tests/models/tokenizer/hard_text.h"

#include <doctest/doctest.h>

#include <sstream>

#include "common/file_util.h"
#include "models/tokenizer/unicode.h"
#include "tests/test_support.h"

namespace fedcal::testing {

std::string with_replacement_characters(const std::string& text) {
  std::string out;
  for (const CodePoint& point : decode_utf8(text)) {
    if (point.value == kInvalidUtf8) {
      out += "\xef\xbf\xbd";
    } else {
      out.append(text, point.offset, point.length);
    }
  }
  return out;
}

std::vector<int> transformers_js_ids(const std::string& scratch, const std::string& models, const std::string& text) {
  const std::string text_path = scratch + ".txt", ids_path = scratch + ".ids";
  write_text(text_path, text);
  const CommandResult run =
      run_oracle("tokenize.mjs", models + "tokenizer.json " + models + "tokenizer_config.json " + text_path + " " + ids_path);
  REQUIRE_MESSAGE(run.exit_code == 0, run.output);
  std::vector<int> ids;
  std::istringstream lines(read_text_file(ids_path));
  for (int id = 0; lines >> id;) ids.push_back(id);
  return ids;
}

size_t first_difference(const std::vector<int>& a, const std::vector<int>& b) {
  size_t i = 0;
  while (i < std::min(a.size(), b.size()) && a[i] == b[i]) ++i;
  return i;
}

std::string hard_text() {
  std::string text =
      "def f(x):\n\treturn {'a': x**2, \"b\": [1, 22, 333, 4444]}  # O(n^2)\r\n\r\n"
      "if (a != b && c <= 0x1F) { printf(\"%d\\n\", a); }\n"
      "Emoji: \xf0\x9f\x98\x80\xf0\x9f\x91\x8d\xf0\x9f\x8f\xbd "
      "\xf0\x9f\x91\xa8\xe2\x80\x8d\xf0\x9f\x91\xa9\xe2\x80\x8d\xf0\x9f\x91\xa7 "
      "\xf0\x9f\x87\xa9\xe2\x80\x8b\xf0\x9f\x87\xaa!!\n"
      "\xe4\xb8\xad\xe6\x96\x87\xe6\xb5\x8b\xe8\xaf\x95\xef\xbc\x8c\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e\xe3\x81\xae\xe3\x83\x86"
      "\xe3\x82\xad\xe3\x82\xb9\xe3\x83\x88\xe3\x80\x82 "
      "\xed\x95\x9c\xea\xb5\xad\xec\x96\xb4 \xe1\x84\x92\xe1\x85\xa1\xe1\x86\xab\n"
      "Caf\xc3\xa9 cafe\xcc\x81 na\xc3\xafve \xc3\x85ngstr\xc3\xb6m \xe2\x84\xab \xe1\xba\xa1\xcc\x81 Stra\xc3\x9f"
      "e \xc5\x93uvre\n"
      "Numbers: 1234567890 3.14159 \xd9\xa3\xd9\xa4\xd9\xa5 \xe0\xa5\xa7\xe0\xa5\xa8 x\xc2\xb2 \xe2\x85\xab 1,000,000\n"
      "Spaces:          ten\t\t\ttabs   \n\n\n\n   \r\n \xc2\xa0nbsp\xe3\x80\x80ideographic  \n"
      "DON'T YOU'LL I'M we'RE they've it'S 'tis '' 'x\n"
      "Special <|begin_of_text|>inline<|end_of_text|> and <|endoftext|><|im_start|>user\n<think>hm</think>\n"
      "Invalid: \x80 \xff\xfe ab\xe2\x82 cd\xc0\xaf ef\xed\xa0\x80 end\xf0\x9f\x98";
  return text;
}

}  // namespace fedcal::testing
