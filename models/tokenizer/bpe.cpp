#include "models/tokenizer/bpe.h"

#include <queue>

namespace fedcal {

std::vector<std::string_view> split_utf8(std::string_view text) {
  std::vector<std::string_view> out;
  size_t i = 0;
  while (i < text.size()) {
    const unsigned char lead = static_cast<unsigned char>(text[i]);
    // The lead byte says how many continuation bytes follow; a stray one after them starts its own.
    const size_t expected = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    size_t length = 1;
    while (length < expected && i + length < text.size() && (static_cast<unsigned char>(text[i + length]) & 0xc0) == 0x80)
      ++length;
    out.push_back(text.substr(i, length));
    i += length;
  }
  return out;
}

std::vector<int> initial_symbols(std::string_view text, const std::function<std::optional<int>(std::string_view)>& piece_id,
                                 const std::function<int(unsigned char)>& byte_id) {
  std::vector<int> symbols;
  for (std::string_view character : split_utf8(text)) {
    if (auto id = piece_id(character)) {
      symbols.push_back(*id);
    } else {
      for (char byte : character) symbols.push_back(byte_id(static_cast<unsigned char>(byte)));
    }
  }
  return symbols;
}

std::optional<unsigned char> parse_byte_piece(std::string_view piece) {
  if (piece.size() != 6 || piece.substr(0, 3) != "<0x" || piece[5] != '>') return std::nullopt;
  auto hex = [](char ch) -> int {
    if (ch >= '0' && ch <= '9') return ch - '0';
    if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
    if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
    return -1;
  };
  const int high = hex(piece[3]), low = hex(piece[4]);
  if (high < 0 || low < 0) return std::nullopt;
  return static_cast<unsigned char>(high * 16 + low);
}

std::vector<int> bpe_merge(std::vector<int> symbols, const BpePairLookup& lookup) {
  const int n = static_cast<int>(symbols.size());
  std::vector<int> prev(n), next(n);
  std::vector<bool> alive(n, true);
  for (int i = 0; i < n; ++i) {
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    double priority;
    int left;  // position of the left symbol
    int left_id, right_id, merged_id;
    bool operator<(const Candidate& other) const {
      if (priority != other.priority) return priority < other.priority;
      return left > other.left;  // the leftmost pair wins ties
    }
  };
  std::priority_queue<Candidate> queue;
  auto consider = [&](int left) {
    if (left < 0 || next[left] < 0) return;
    const int right = next[left];
    if (auto merge = lookup(symbols[left], symbols[right])) {
      queue.push({merge->priority, left, symbols[left], symbols[right], merge->merged_id});
    }
  };
  for (int i = 0; i + 1 < n; ++i) consider(i);

  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    const int left = top.left;
    // Skip candidates made stale by an earlier merge of either symbol.
    if (!alive[left] || next[left] < 0 || symbols[left] != top.left_id || symbols[next[left]] != top.right_id) continue;
    const int right = next[left];
    symbols[left] = top.merged_id;
    alive[right] = false;
    next[left] = next[right];
    if (next[right] >= 0) prev[next[right]] = left;
    consider(prev[left]);
    consider(left);
  }
  std::vector<int> out;
  for (int i = 0; i >= 0 && i < n; i = next[i]) out.push_back(symbols[i]);
  return out;
}

std::string visible_spaces_to_spaces(std::string_view piece) {
  std::string text;
  for (size_t i = 0; i < piece.size();) {
    if (piece.substr(i, kVisibleSpace.size()) == kVisibleSpace) {
      text += ' ';
      i += kVisibleSpace.size();
    } else {
      text += piece[i++];
    }
  }
  return text;
}

std::string spaces_to_visible_spaces(std::string_view text) {
  std::string piece;
  for (char c : text) {
    if (c == ' ') {
      piece += kVisibleSpace;
    } else {
      piece += c;
    }
  }
  return piece;
}

}  // namespace fedcal
