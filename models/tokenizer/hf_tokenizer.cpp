#include "models/tokenizer/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_util.h"
#include "models/tokenizer/bpe.h"

namespace fedcal {
namespace {

using nlohmann::json;
constexpr int64_t kMaxVocab = 1 << 22;

std::string type_of(const json& node) {
  if (!node.is_object() || !node.contains("type") || !node["type"].is_string()) return "";
  return node["type"].get<std::string>();
}

std::string string_field(const json& node, const char* field) {
  auto it = node.find(field);
  if (it == node.end() || !it->is_string()) fail("'{}' is missing or not a string", field);
  return it->get<std::string>();
}

}  // namespace

HfTokenizer HfTokenizer::read(const std::string& path, std::optional<int> bos_id, std::optional<int> eos_id) {
  return parse(read_text_file(path), path, bos_id, eos_id);
}

HfTokenizer HfTokenizer::parse(const std::string& json_text, const std::string& source, std::optional<int> bos_id,
                               std::optional<int> eos_id) {
  return with_context(
      [&] { return source; },
      [&] {
        json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
        if (root.is_discarded() || !root.is_object()) fail("not a JSON object");
        HfTokenizer tokenizer;

        const json& model = root.contains("model") ? root["model"] : json();
        if (type_of(model) != "BPE") fail("model type '{}' is not supported (only BPE)", type_of(model));
        const json& vocab = model.contains("vocab") ? model["vocab"] : json();
        if (!vocab.is_object()) fail("model.vocab is not an object");
        int64_t max_id = 0;
        auto add_piece = [&](const std::string& piece, const json& id_node) {
          if (!id_node.is_number_integer() || id_node.get<int64_t>() < 0 || id_node.get<int64_t>() >= max_id) {
            fail("piece '{}' has an invalid id {} (ids must be contiguous from 0 to {})", piece, id_node.dump(), max_id - 1);
          }
          const size_t id = id_node.get<size_t>();
          if (id >= tokenizer.pieces_.size()) tokenizer.pieces_.resize(id + 1);
          if (!tokenizer.pieces_[id].empty() && tokenizer.pieces_[id] != piece) {
            fail("id {} is given to both '{}' and '{}'", id, tokenizer.pieces_[id], piece);
          }
          tokenizer.pieces_[id] = piece;
          tokenizer.ids_.emplace(piece, static_cast<int>(id));
        };
        // Ids must be contiguous, so none can exceed the number of entries: this bounds memory on hostile input.
        const size_t entries =
            vocab.size() + (root.contains("added_tokens") && root["added_tokens"].is_array() ? root["added_tokens"].size() : 0);
        max_id = std::min<int64_t>(kMaxVocab, static_cast<int64_t>(entries));
        for (const auto& [piece, id] : vocab.items()) add_piece(piece, id);
        if (root.contains("added_tokens")) {
          if (!root["added_tokens"].is_array()) fail("added_tokens is not an array");
          for (const json& added : root["added_tokens"]) {
            if (!added.is_object()) fail("added_tokens has an entry that is not an object");
            add_piece(string_field(added, "content"), added.contains("id") ? added["id"] : json());
          }
        }
        for (size_t id = 0; id < tokenizer.pieces_.size(); ++id) {
          if (tokenizer.pieces_[id].empty()) fail("token id {} has no piece (ids must be contiguous)", id);
        }
        if (tokenizer.pieces_.empty()) fail("the vocabulary is empty");

        tokenizer.byte_ids_.assign(256, -1);
        const bool byte_fallback =
            model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>();
        if (byte_fallback) {
          for (int byte = 0; byte < 256; ++byte) {
            auto it = tokenizer.ids_.find(fmt::format("<0x{:02X}>", byte));
            if (it == tokenizer.ids_.end()) fail("byte_fallback is set but the vocabulary has no piece <0x{:02X}>", byte);
            tokenizer.byte_ids_[byte] = it->second;
          }
        }
        if (model.contains("unk_token") && model["unk_token"].is_string()) {
          auto it = tokenizer.ids_.find(model["unk_token"].get<std::string>());
          if (it != tokenizer.ids_.end()) tokenizer.unk_id_ = it->second;
        }

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
          auto l = tokenizer.ids_.find(left), r = tokenizer.ids_.find(right), m = tokenizer.ids_.find(left + right);
          if (l == tokenizer.ids_.end() || r == tokenizer.ids_.end() || m == tokenizer.ids_.end()) {
            fail("merge {} names a piece that is not in the vocabulary", merge.dump());
          }
          const uint64_t key = (static_cast<uint64_t>(l->second) << 32) | static_cast<uint32_t>(r->second);
          tokenizer.merges_.emplace(key, Merge{rank++, m->second});
        }

        // Where the visible-space symbol comes from: a normalizer (Prepend + Replace) or a Metaspace pre-tokenizer.
        const json& normalizer = root.contains("normalizer") ? root["normalizer"] : json();
        const json& pre_tokenizer = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
        tokenizer.prepend_space_ = false;
        if (!normalizer.is_null()) {
          std::vector<json> steps;
          if (type_of(normalizer) == "Sequence" && normalizer.contains("normalizers") && normalizer["normalizers"].is_array()) {
            steps.assign(normalizer["normalizers"].begin(), normalizer["normalizers"].end());
          } else {
            steps.push_back(normalizer);
          }
          for (const json& step : steps) {
            const std::string type = type_of(step);
            if (type == "Prepend") {
              if (string_field(step, "prepend") != tokenizer.space_symbol_)
                fail("Prepend normalizer of a symbol other than U+2581");
              tokenizer.prepend_space_ = true;
            } else if (type == "Replace") {
              const json& pattern = step.contains("pattern") ? step["pattern"] : json();
              if (!pattern.is_object() || !pattern.contains("String") || pattern["String"] != " " ||
                  string_field(step, "content") != tokenizer.space_symbol_) {
                fail("Replace normalizer {} is not supported (only \" \" -> U+2581)", step.dump());
              }
            } else {
              fail("normalizer '{}' is not supported", type);
            }
          }
        }
        if (!pre_tokenizer.is_null()) {
          const std::string type = type_of(pre_tokenizer);
          if (type != "Metaspace") fail("pre_tokenizer '{}' is not supported (byte-level BPE is not; Metaspace is)", type);
          if (pre_tokenizer.contains("replacement") && string_field(pre_tokenizer, "replacement") != tokenizer.space_symbol_) {
            fail("Metaspace replacement other than U+2581 is not supported");
          }
          std::string scheme =
              pre_tokenizer.contains("prepend_scheme") ? string_field(pre_tokenizer, "prepend_scheme") : "always";
          if (pre_tokenizer.contains("add_prefix_space") && pre_tokenizer["add_prefix_space"].is_boolean() &&
              !pre_tokenizer["add_prefix_space"].get<bool>()) {
            scheme = "never";
          }
          tokenizer.prepend_space_ = scheme != "never";
          tokenizer.split_on_space_ = !pre_tokenizer.contains("split") || pre_tokenizer["split"] == true;
        }

        auto find_special = [&](std::optional<int> configured, const char* piece) {
          if (configured) {
            if (*configured >= tokenizer.vocab_size()) fail("special token id {} is outside the vocabulary", *configured);
            return *configured;
          }
          auto it = tokenizer.ids_.find(piece);
          return it == tokenizer.ids_.end() ? -1 : it->second;
        };
        tokenizer.bos_id_ = find_special(bos_id, "<s>");
        tokenizer.eos_id_ = find_special(eos_id, "</s>");
        if (tokenizer.bos_id_ < 0) fail("no beginning-of-sequence token (<s>) and none given by config.json");
        return tokenizer;
      });
}

std::vector<int> HfTokenizer::encode_word(std::string_view word) const {
  auto piece_id = [this](std::string_view piece) -> std::optional<int> {
    auto it = ids_.find(std::string(piece));
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  };
  auto byte_id = [this](unsigned char byte) {
    if (byte_ids_[byte] >= 0) return byte_ids_[byte];
    if (unk_id_ >= 0) return unk_id_;
    fail("character byte 0x{:02X} has no piece, no byte fallback and no unk_token", byte);
  };
  auto lookup = [this](int left, int right) -> std::optional<BpeMerge> {
    auto it = merges_.find((static_cast<uint64_t>(left) << 32) | static_cast<uint32_t>(right));
    if (it == merges_.end()) return std::nullopt;
    return BpeMerge{-static_cast<double>(it->second.rank), it->second.merged_id};
  };
  return bpe_merge(initial_symbols(word, piece_id, byte_id), lookup);
}

std::vector<int> HfTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos) tokens.push_back(bos_id_);
  if (text.empty()) return tokens;
  std::string normalized = prepend_space_ ? space_symbol_ : "";
  for (char ch : text) {
    if (ch == ' ') {
      normalized += space_symbol_;
    } else {
      normalized += ch;
    }
  }
  if (!split_on_space_) {
    for (int id : encode_word(normalized)) tokens.push_back(id);
    return tokens;
  }
  // Metaspace split: every word starts at a space symbol.
  size_t start = 0;
  while (start < normalized.size()) {
    size_t next = normalized.find(space_symbol_, start + 1);
    if (next == std::string::npos) next = normalized.size();
    for (int id : encode_word(std::string_view(normalized).substr(start, next - start))) tokens.push_back(id);
    start = next;
  }
  return tokens;
}

std::string HfTokenizer::decode(int previous, int token) const {
  if (token < 0 || token >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", token, vocab_size());
  const std::string& piece = pieces_[token];
  if (auto byte = parse_byte_piece(piece); byte && byte_ids_[*byte] == token) return std::string(1, static_cast<char>(*byte));
  std::string text = visible_spaces_to_spaces(piece);
  if (previous == bos_id_ && prepend_space_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace fedcal
