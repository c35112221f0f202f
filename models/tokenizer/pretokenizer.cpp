#include "models/tokenizer/pretokenizer.h"

#include <array>

#include "models/tokenizer/unicode.h"

namespace fedcal {
namespace {

constexpr std::string_view kGpt2Regex = R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
constexpr std::string_view kLlama3Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";
constexpr std::string_view kQwen2Regex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// The code points of one text with a sentinel past the end, so lookahead needs no bounds checks.
class Cursor {
 public:
  explicit Cursor(std::string_view text) : points_(decode_utf8(text)), size_(points_.size()) {
    points_.push_back({0, static_cast<uint32_t>(text.size()), 0});
  }
  size_t size() const { return size_; }
  char32_t at(size_t i) const { return i < size_ ? points_[i].value : 0; }
  bool letter(size_t i) const { return i < size_ && is_letter(at(i)); }
  bool number(size_t i) const { return i < size_ && is_number(at(i)); }
  bool space(size_t i) const { return i < size_ && is_white_space(at(i)); }
  bool newline(size_t i) const { return i < size_ && (at(i) == '\r' || at(i) == '\n'); }
  bool other(size_t i) const { return i < size_ && !letter(i) && !number(i) && !space(i); }  // [^\s\p{L}\p{N}]
  uint32_t offset(size_t i) const { return points_[i].offset; }

  template <class Predicate>
  size_t run(size_t i, Predicate predicate) const {  // end of the run of `predicate` from i
    while (i < size_ && predicate(i)) ++i;
    return i;
  }

 private:
  std::vector<CodePoint> points_;
  size_t size_;
};

bool ascii_is(char32_t value, char lower, bool ignore_case) {
  if (value == static_cast<char32_t>(lower)) return true;
  if (!ignore_case) return false;
  if (value == static_cast<char32_t>(lower - 'a' + 'A')) return true;
  return lower == 's' && value == 0x17f;  // LATIN SMALL LETTER LONG S folds to s
}

// 's|'t|'re|'ve|'m|'ll|'d at i: the end of the match, or i.
size_t contraction(const Cursor& c, size_t i, bool ignore_case) {
  if (c.at(i) != '\'' || i + 1 >= c.size()) return i;
  static constexpr std::array<std::string_view, 7> kSuffixes = {"s", "t", "re", "ve", "m", "ll", "d"};
  for (std::string_view suffix : kSuffixes) {
    size_t k = 0;
    while (k < suffix.size() && ascii_is(c.at(i + 1 + k), suffix[k], ignore_case)) ++k;
    if (k == suffix.size()) return i + 1 + k;
  }
  return i;
}

// \s+(?!\S)|\s+ at a white-space character i.
size_t trailing_space(const Cursor& c, size_t i) {
  const size_t end = c.run(i, [&](size_t k) { return c.space(k); });
  // Greedy \s+ then backs off one character when a non-space follows, unless that leaves nothing.
  if (end < c.size() && end - i > 1) return end - 1;
  return end;
}

size_t match_gpt2(const Cursor& c, size_t i) {
  if (size_t end = contraction(c, i, false); end != i) return end;
  const size_t start = c.at(i) == ' ' && i + 1 < c.size() && !c.space(i + 1) ? i + 1 : i;
  if (c.letter(start)) return c.run(start, [&](size_t k) { return c.letter(k); });
  if (c.number(start)) return c.run(start, [&](size_t k) { return c.number(k); });
  if (c.other(start)) return c.run(start, [&](size_t k) { return c.other(k); });
  return trailing_space(c, i);
}

size_t match_llama3(const Cursor& c, size_t i, size_t max_digits) {
  if (size_t end = contraction(c, i, true); end != i) return end;
  // [^\r\n\p{L}\p{N}]?\p{L}+
  if (c.letter(i)) return c.run(i, [&](size_t k) { return c.letter(k); });
  if (!c.newline(i) && !c.number(i) && c.letter(i + 1)) return c.run(i + 1, [&](size_t k) { return c.letter(k); });
  // \p{N}{1,max}
  if (c.number(i)) {
    size_t end = i;
    while (end < c.size() && end - i < max_digits && c.number(end)) ++end;
    return end;
  }
  //  ?[^\s\p{L}\p{N}]+[\r\n]*
  const size_t start = c.at(i) == ' ' && c.other(i + 1) ? i + 1 : i;
  if (c.other(start)) {
    const size_t end = c.run(start, [&](size_t k) { return c.other(k); });
    return c.run(end, [&](size_t k) { return c.newline(k); });
  }
  // \s*[\r\n]+ : the white-space run up to and including its last line break, if it has one.
  const size_t end = c.run(i, [&](size_t k) { return c.space(k); });
  for (size_t k = end; k > i; --k) {
    if (c.newline(k - 1)) return k;
  }
  return trailing_space(c, i);
}

}  // namespace

std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex) {
  if (regex == kGpt2Regex) return SplitPattern::kGpt2;
  if (regex == kLlama3Regex) return SplitPattern::kLlama3;
  if (regex == kQwen2Regex) return SplitPattern::kQwen2;
  return std::nullopt;
}

std::string_view split_pattern_regex(SplitPattern pattern) {
  switch (pattern) {
    case SplitPattern::kGpt2:
      return kGpt2Regex;
    case SplitPattern::kLlama3:
      return kLlama3Regex;
    case SplitPattern::kQwen2:
      return kQwen2Regex;
  }
  return {};
}

std::vector<std::string_view> split_words(std::string_view text, SplitPattern pattern) {
  const Cursor c(text);
  std::vector<std::string_view> words;
  for (size_t i = 0; i < c.size();) {
    size_t end = i;
    switch (pattern) {
      case SplitPattern::kGpt2:
        end = match_gpt2(c, i);
        break;
      case SplitPattern::kLlama3:
        end = match_llama3(c, i, 3);
        break;
      case SplitPattern::kQwen2:
        end = match_llama3(c, i, 1);
        break;
    }
    if (end <= i) end = i + 1;  // every character matches some alternative; this only guards the loop
    words.push_back(text.substr(c.offset(i), c.offset(end) - c.offset(i)));
    i = end;
  }
  return words;
}

std::vector<std::string_view> split_digits(std::string_view text, bool individual) {
  const Cursor c(text);
  std::vector<std::string_view> pieces;
  for (size_t i = 0; i < c.size();) {
    const size_t end = !c.number(i) ? c.run(i, [&](size_t k) { return !c.number(k); })
                       : individual ? i + 1
                                    : c.run(i, [&](size_t k) { return c.number(k); });
    pieces.push_back(text.substr(c.offset(i), c.offset(end) - c.offset(i)));
    i = end;
  }
  return pieces;
}

}  // namespace fedcal
