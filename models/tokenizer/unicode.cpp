#include "models/tokenizer/unicode.h"

#include <algorithm>
#include <span>

namespace fedcal {
namespace {

struct CodePointRange {
  char32_t first, last;
};
struct CombiningClassRange {
  char32_t first, last;
  uint8_t combining_class;
};
struct Decomposition {
  char32_t value;
  uint8_t length;
  char32_t parts[4];
};
struct Composition {
  char32_t first, second, composite;
};

#include "models/tokenizer/unicode_tables.inc"

bool in_ranges(std::span<const CodePointRange> ranges, char32_t value) {
  auto it = std::upper_bound(ranges.begin(), ranges.end(), value,
                             [](char32_t v, const CodePointRange& range) { return v < range.first; });
  return it != ranges.begin() && value <= std::prev(it)->last;
}

uint8_t combining_class(char32_t value) {
  if (value < 0x300) return 0;
  const std::span<const CombiningClassRange> ranges(kCombiningClasses);
  auto it = std::upper_bound(ranges.begin(), ranges.end(), value,
                             [](char32_t v, const CombiningClassRange& range) { return v < range.first; });
  return it != ranges.begin() && value <= std::prev(it)->last ? std::prev(it)->combining_class : 0;
}

// Hangul syllables compose and decompose by arithmetic (Unicode 3.12).
constexpr char32_t kSBase = 0xAC00, kLBase = 0x1100, kVBase = 0x1161, kTBase = 0x11A7;
constexpr char32_t kLCount = 19, kVCount = 21, kTCount = 28, kNCount = kVCount * kTCount, kSCount = kLCount * kNCount;

void decompose(char32_t value, std::vector<char32_t>& out) {
  if (value >= kSBase && value < kSBase + kSCount) {
    const char32_t index = value - kSBase;
    out.push_back(kLBase + index / kNCount);
    out.push_back(kVBase + (index % kNCount) / kTCount);
    if (index % kTCount != 0) out.push_back(kTBase + index % kTCount);
    return;
  }
  const std::span<const Decomposition> table(kDecompositions);
  auto it = std::lower_bound(table.begin(), table.end(), value, [](const Decomposition& d, char32_t v) { return d.value < v; });
  if (it == table.end() || it->value != value) {
    out.push_back(value);
    return;
  }
  out.insert(out.end(), it->parts, it->parts + it->length);
}

char32_t compose(char32_t first, char32_t second) {
  if (first >= kLBase && first < kLBase + kLCount && second >= kVBase && second < kVBase + kVCount) {
    return kSBase + ((first - kLBase) * kVCount + (second - kVBase)) * kTCount;
  }
  if (first >= kSBase && first < kSBase + kSCount && (first - kSBase) % kTCount == 0 && second > kTBase &&
      second < kTBase + kTCount) {
    return first + (second - kTBase);
  }
  const std::span<const Composition> table(kCompositions);
  auto it = std::lower_bound(table.begin(), table.end(), std::pair{first, second}, [](const Composition& c, auto key) {
    return c.first != key.first ? c.first < key.first : c.second < key.second;
  });
  return it != table.end() && it->first == first && it->second == second ? it->composite : 0;
}

}  // namespace

const char* unicode_version() { return kUnicodeVersion; }

std::vector<CodePoint> decode_utf8(std::string_view text) {
  std::vector<CodePoint> out;
  out.reserve(text.size());
  const auto byte = [&](size_t i) { return static_cast<unsigned char>(text[i]); };
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = byte(i);
    uint32_t length = lead < 0x80                   ? 1
                      : lead >= 0xc2 && lead < 0xe0 ? 2
                      : lead >= 0xe0 && lead < 0xf0 ? 3
                      : lead >= 0xf0 && lead < 0xf5 ? 4
                                                    : 0;
    char32_t value = length == 1 ? lead : length == 2 ? lead & 0x1f : length == 3 ? lead & 0x0f : lead & 0x07;
    for (uint32_t k = 1; k < length; ++k) {
      if (i + k >= text.size() || (byte(i + k) & 0xc0) != 0x80) {
        length = 0;
        break;
      }
      value = (value << 6) | (byte(i + k) & 0x3f);
    }
    // Overlong forms, surrogates and values past U+10FFFF are not UTF-8.
    if ((length == 3 && (value < 0x800 || (value >= 0xd800 && value < 0xe000))) ||
        (length == 4 && (value < 0x10000 || value > 0x10ffff))) {
      length = 0;
    }
    if (length == 0) {
      out.push_back({kInvalidUtf8, static_cast<uint32_t>(i), 1});
      ++i;
    } else {
      out.push_back({value, static_cast<uint32_t>(i), length});
      i += length;
    }
  }
  return out;
}

void append_utf8(std::string& out, char32_t value) {
  if (value < 0x80) {
    out += static_cast<char>(value);
  } else if (value < 0x800) {
    out += static_cast<char>(0xc0 | (value >> 6));
    out += static_cast<char>(0x80 | (value & 0x3f));
  } else if (value < 0x10000) {
    out += static_cast<char>(0xe0 | (value >> 12));
    out += static_cast<char>(0x80 | ((value >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (value & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (value >> 18));
    out += static_cast<char>(0x80 | ((value >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((value >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (value & 0x3f));
  }
}

bool is_letter(char32_t value) {
  if (value < 0x80) return (value | 0x20) >= 'a' && (value | 0x20) <= 'z';
  return in_ranges(kLetterRanges, value);
}

bool is_number(char32_t value) {
  if (value < 0x80) return value >= '0' && value <= '9';
  return in_ranges(kNumberRanges, value);
}

bool is_white_space(char32_t value) {
  switch (value) {
    case 0x09:
    case 0x0a:
    case 0x0b:
    case 0x0c:
    case 0x0d:
    case 0x20:
    case 0x85:
    case 0xa0:
    case 0x1680:
    case 0x2028:
    case 0x2029:
    case 0x202f:
    case 0x205f:
    case 0x3000:
      return true;
    default:
      return value >= 0x2000 && value <= 0x200a;
  }
}

std::string nfc(std::string_view text) {
  const std::vector<CodePoint> points = decode_utf8(text);
  // Below U+0300 every character is its own NFC and none composes with what precedes it.
  if (std::all_of(points.begin(), points.end(), [](const CodePoint& p) { return p.value < 0x300; })) {
    return std::string(text);
  }
  // 1. Full canonical decomposition. Invalid bytes are kept as their own marker with their byte.
  struct Item {
    char32_t value;
    unsigned char invalid_byte;
  };
  std::vector<Item> items;
  std::vector<char32_t> parts;
  for (const CodePoint& p : points) {
    if (p.value == kInvalidUtf8) {
      items.push_back({kInvalidUtf8, static_cast<unsigned char>(text[p.offset])});
      continue;
    }
    parts.clear();
    decompose(p.value, parts);
    for (char32_t part : parts) items.push_back({part, 0});
  }
  // 2. Canonical ordering: each run of non-starters sorted (stably) by combining class.
  for (size_t i = 0; i < items.size();) {
    if (combining_class(items[i].value) == 0) {
      ++i;
      continue;
    }
    size_t end = i;
    while (end < items.size() && combining_class(items[end].value) != 0) ++end;
    std::stable_sort(items.begin() + i, items.begin() + end,
                     [](const Item& a, const Item& b) { return combining_class(a.value) < combining_class(b.value); });
    i = end;
  }
  // 3. Canonical composition: a character joins the last starter unless something between blocks it
  //    (a starter, or a mark of the same or a higher class).
  std::vector<Item> out;
  long starter = -1;
  uint8_t last_class = 0;
  for (const Item& item : items) {
    const uint8_t cc = item.value == kInvalidUtf8 ? 0 : combining_class(item.value);
    const bool adjacent = starter >= 0 && static_cast<size_t>(starter) + 1 == out.size();
    if (starter >= 0 && item.value != kInvalidUtf8 && out[starter].value != kInvalidUtf8 &&
        (adjacent || (last_class != 0 && last_class < cc))) {
      if (const char32_t composite = compose(out[starter].value, item.value)) {
        out[starter].value = composite;
        continue;
      }
    }
    if (cc == 0) starter = static_cast<long>(out.size());
    last_class = cc;
    out.push_back(item);
  }
  std::string result;
  result.reserve(text.size());
  for (const Item& item : out) {
    if (item.value == kInvalidUtf8) {
      result += static_cast<char>(item.invalid_byte);
    } else {
      append_utf8(result, item.value);
    }
  }
  return result;
}

}  // namespace fedcal
