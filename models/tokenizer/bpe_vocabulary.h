// The part of a tokenizer.json that every BPE tokenizer shares: model.vocab (piece -> id, contiguous
// ids), added_tokens, and model.merges ranked by position ("a b" strings or ["a", "b"] pairs).
#pragma once

#include <array>
#include <functional>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "models/tokenizer/bpe.h"

namespace fedcal {

struct AddedToken {
  std::string content;
  int id;
  bool special;
};

struct BpeVocabulary {
  std::vector<std::string> pieces;           // id -> piece
  std::unordered_map<std::string, int> ids;  // piece -> id
  std::vector<AddedToken> added;             // in file order
  struct RankedMerge {
    int rank;
    int merged_id;
  };
  std::unordered_map<uint64_t, RankedMerge> merges;  // (left id << 32 | right id) -> merge

  std::optional<int> id_of(std::string_view piece) const;
  // The merge of (left, right) with the lower rank first, as bpe_merge wants it.
  std::optional<BpeMerge> merge(int left, int right) const;
};

// Finds added tokens in raw text as Hugging Face tokenizers do before normalizing: leftmost first,
// then the longest at that position. Holds pointers into `added`, which must outlive it.
class AddedTokenMatcher {
 public:
  AddedTokenMatcher() = default;
  explicit AddedTokenMatcher(const std::vector<AddedToken>& added);
  // Calls on_text(stretch) for each stretch of `text` between added tokens (possibly empty) and
  // on_token(id) for each added token, in order.
  void split(std::string_view text, const std::function<void(std::string_view)>& on_text,
             const std::function<void(int)>& on_token) const;

 private:
  std::array<std::vector<const AddedToken*>, 256> by_first_byte_;  // longest first
};

// Reads model.vocab, added_tokens and model.merges of a parsed tokenizer.json; errors name the field
// (the caller adds the file).
BpeVocabulary parse_bpe_vocabulary(const nlohmann::json& root);

// The "type" of a tokenizer.json node, or "" when it has none.
std::string json_type(const nlohmann::json& node);
// A string field of a tokenizer.json node, refused by name if missing or not a string.
std::string json_string(const nlohmann::json& node, const char* field);

}  // namespace fedcal
