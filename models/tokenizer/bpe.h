// The byte-pair merge loop shared by the llama2.c and tokenizer.json tokenizers: start from one symbol
// per UTF-8 character (or per byte where a character has no piece), then repeatedly merge the adjacent
// pair of highest priority until none is mergeable. O(n log n) with a heap and a linked list, so a whole
// book encodes in one call; ties go to the leftmost pair, as in llama2.c and sentencepiece.
#pragma once

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace fedcal {

struct BpeMerge {
  double priority;  // higher merges first
  int merged_id;
};

// Returns the merge for the pair (left, right), or nullopt if the pair is not mergeable.
using BpePairLookup = std::function<std::optional<BpeMerge>(int left, int right)>;

std::vector<int> bpe_merge(std::vector<int> symbols, const BpePairLookup& lookup);

// Splits `text` into UTF-8 characters: a lead byte plus the continuation bytes it announces (1 to 3).
// Invalid bytes (stray continuation bytes, truncated sequences) come out apart from the valid
// characters around them, so byte fallback covers them alone.
std::vector<std::string_view> split_utf8(std::string_view text);

// Initial symbols: the piece id of each character via `piece_id`, else its bytes' fallback ids via
// `byte_id` (which throws or returns an unknown-token id when the vocabulary has no byte pieces).
std::vector<int> initial_symbols(std::string_view text, const std::function<std::optional<int>(std::string_view)>& piece_id,
                                 const std::function<int(unsigned char)>& byte_id);

// Parses a byte-fallback piece "<0xNN>"; nullopt for any other piece.
std::optional<unsigned char> parse_byte_piece(std::string_view piece);

// U+2581, the visible space of sentencepiece vocabularies.
inline constexpr std::string_view kVisibleSpace = "\xe2\x96\x81";
// Replaces every U+2581 in `piece` by a plain space.
std::string visible_spaces_to_spaces(std::string_view piece);
// Replaces every plain space in `text` by U+2581 (the inverse).
std::string spaces_to_visible_spaces(std::string_view text);

}  // namespace fedcal
