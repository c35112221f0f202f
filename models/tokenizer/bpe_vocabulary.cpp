#include "models/tokenizer/bpe_vocabulary.h"

#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/error.h"

namespace fedcal {
namespace {

using nlohmann::json;
constexpr int64_t kMaxTokenizerVocab = 1 << 22;

uint64_t pair_key(int left, int right) { return (static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right); }

}  // namespace

std::string json_type(const json& node) {
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) return "";
  return node["type"].get<std::string>();
}

std::string json_string(const json& node, const char* field) {
  auto it = node.find(field);
  if (it == node.end() || !it->is_string()) fail("'{}' is missing or not a string", field);
  return it->get<std::string>();
}

std::optional<int> BpeVocabulary::id_of(std::string_view piece) const {
  auto it = ids.find(std::string(piece));
  if (it == ids.end()) return std::nullopt;
  return it->second;
}

std::optional<BpeMerge> BpeVocabulary::merge(int left, int right) const {
  auto it = merges.find(pair_key(left, right));
  if (it == merges.end()) return std::nullopt;
  return BpeMerge{-static_cast<double>(it->second.rank), it->second.merged_id};
}

BpeVocabulary parse_bpe_vocabulary(const json& root) {
  BpeVocabulary v;
  const json& model = root.contains("model") ? root["model"] : json();
  if (json_type(model) != "BPE") fail("model type '{}' is not supported (only BPE)", json_type(model));
  const json& vocab = model.contains("vocab") ? model["vocab"] : json();
  if (!vocab.is_object()) fail("model.vocab is not an object");
  // Ids must be contiguous, so none can exceed the number of entries: this bounds memory on hostile input.
  const json& added_tokens = root.contains("added_tokens") ? root["added_tokens"] : json::array();
  if (!added_tokens.is_array()) fail("added_tokens is not an array");
  const int64_t max_id = std::min<int64_t>(kMaxTokenizerVocab, static_cast<int64_t>(vocab.size() + added_tokens.size()));
  auto add_piece = [&](const std::string& piece, const json& id_node) {
    if (!id_node.is_number_integer() || id_node.get<int64_t>() < 0 || id_node.get<int64_t>() >= max_id) {
      fail("piece '{}' has an invalid id {} (ids must be contiguous from 0 to {})", piece, id_node.dump(), max_id - 1);
    }
    const size_t id = id_node.get<size_t>();
    if (id >= v.pieces.size()) v.pieces.resize(id + 1);
    if (!v.pieces[id].empty() && v.pieces[id] != piece) fail("id {} is given to both '{}' and '{}'", id, v.pieces[id], piece);
    v.pieces[id] = piece;
    v.ids.emplace(piece, static_cast<int>(id));
    return static_cast<int>(id);
  };
  for (const auto& [piece, id] : vocab.items()) add_piece(piece, id);
  for (const json& added : added_tokens) {
    if (!added.is_object()) fail("added_tokens has an entry that is not an object");
    const std::string content = json_string(added, "content");
    if (content.empty()) fail("added_tokens has an entry with empty content");
    const int id = add_piece(content, added.contains("id") ? added["id"] : json());
    const bool special = added.contains("special") && added["special"] == true;
    // Whitespace stripping around an added token and whole-word matching change the ids: refused.
    for (const char* flag : {"lstrip", "rstrip", "single_word"}) {
      if (added.contains(flag) && added[flag] == true) fail("added token '{}' has {} true, which fedcal does not implement", content, flag);
    }
    v.added.push_back({content, id, special});
  }
  for (size_t id = 0; id < v.pieces.size(); ++id) {
    if (v.pieces[id].empty()) fail("token id {} has no piece (ids must be contiguous)", id);
  }
  if (v.pieces.empty()) fail("the vocabulary is empty");

  const json& merges = model.contains("merges") ? model["merges"] : json::array();
  if (!merges.is_array()) fail("model.merges is not an array");
  int rank = 0;
  for (const json& merge : merges) {
    std::string left, right;
    if (merge.is_string()) {
      const std::string text = merge.get<std::string>();
      const size_t space = text.find(' ');
      if (space == std::string::npos || text.find(' ', space + 1) != std::string::npos)
        fail("merge '{}' is not two pieces", text);
      left = text.substr(0, space);
      right = text.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() && merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      fail("merge {} is neither \"a b\" nor [\"a\", \"b\"]", merge.dump());
    }
    auto l = v.ids.find(left), r = v.ids.find(right), m = v.ids.find(left + right);
    if (l == v.ids.end() || r == v.ids.end() || m == v.ids.end())
      fail("merge {} names a piece that is not in the vocabulary", merge.dump());
    v.merges.emplace(pair_key(l->second, r->second), BpeVocabulary::RankedMerge{rank++, m->second});
  }
  return v;
}

AddedTokenMatcher::AddedTokenMatcher(const std::vector<AddedToken>& added) {
  for (const AddedToken& token : added) by_first_byte_[static_cast<unsigned char>(token.content[0])].push_back(&token);
  for (auto& candidates : by_first_byte_) {
    std::stable_sort(candidates.begin(), candidates.end(),
                     [](const AddedToken* a, const AddedToken* b) { return a->content.size() > b->content.size(); });
  }
}

void AddedTokenMatcher::split(std::string_view text, const std::function<void(std::string_view)>& on_text,
                              const std::function<void(int)>& on_token) const {
  size_t start = 0;
  for (size_t i = 0; i < text.size(); ++i) {
    for (const AddedToken* added : by_first_byte_[static_cast<unsigned char>(text[i])]) {
      if (text.compare(i, added->content.size(), added->content) != 0) continue;
      on_text(text.substr(start, i - start));
      on_token(added->id);
      i += added->content.size() - 1;
      start = i + 1;
      break;
    }
  }
  on_text(text.substr(start));
}

}  // namespace fedcal
