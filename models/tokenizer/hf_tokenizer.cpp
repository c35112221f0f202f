#include "models/tokenizer/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "common/file_util.h"
#include "models/tokenizer/bpe.h"
#include "models/tokenizer/byte_level_bpe_tokenizer.h"

namespace fedcal {

using nlohmann::json;

namespace {

bool has_byte_level_step(const json& pre_tokenizer) {
  if (json_type(pre_tokenizer) == "ByteLevel") return true;
  if (json_type(pre_tokenizer) != "Sequence" || !pre_tokenizer.contains("pretokenizers") ||
      !pre_tokenizer["pretokenizers"].is_array())
    return false;
  for (const json& step : pre_tokenizer["pretokenizers"]) {
    if (json_type(step) == "ByteLevel") return true;
  }
  return false;
}

}  // namespace

std::unique_ptr<Tokenizer> parse_hf_tokenizer(const std::string& json_text, const std::string& source, std::optional<int> bos_id,
                                              std::optional<int> eos_id) {
  return with_context([&] { return source; },
                      [&]() -> std::unique_ptr<Tokenizer> {
                        const json root = json::parse(json_text, nullptr, /*allow_exceptions=*/false);
                        if (root.is_discarded() || !root.is_object()) fail("not a JSON object");
                        if (root.contains("pre_tokenizer") && has_byte_level_step(root["pre_tokenizer"])) {
                          return ByteLevelBpeTokenizer::from_json(root, bos_id, eos_id);
                        }
                        return HfTokenizer::from_json(root, bos_id, eos_id);
                      });
}

std::unique_ptr<HfTokenizer> HfTokenizer::from_json(const json& root, std::optional<int> bos_id, std::optional<int> eos_id) {
  std::unique_ptr<HfTokenizer> owned(new HfTokenizer());
  HfTokenizer& tokenizer = *owned;
  tokenizer.vocab_ = parse_bpe_vocabulary(root);
  const json& model = root["model"];

  tokenizer.byte_ids_.assign(256, -1);
  const bool byte_fallback =
      model.contains("byte_fallback") && model["byte_fallback"].is_boolean() && model["byte_fallback"].get<bool>();
  if (byte_fallback) {
    for (int byte = 0; byte < 256; ++byte) {
      auto id = tokenizer.vocab_.id_of(fmt::format("<0x{:02X}>", byte));
      if (!id) fail("byte_fallback is set but the vocabulary has no piece <0x{:02X}>", byte);
      tokenizer.byte_ids_[byte] = *id;
    }
  }
  if (model.contains("unk_token") && model["unk_token"].is_string()) {
    if (auto id = tokenizer.vocab_.id_of(model["unk_token"].get<std::string>())) tokenizer.unk_id_ = *id;
  }

  // Where the visible-space symbol comes from: a normalizer (Prepend + Replace) or a Metaspace pre-tokenizer.
  const json& normalizer = root.contains("normalizer") ? root["normalizer"] : json();
  const json& pre_tokenizer = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
  tokenizer.prepend_space_ = false;
  bool replaces_spaces = false;
  if (!normalizer.is_null()) {
    std::vector<json> steps;
    if (json_type(normalizer) == "Sequence" && normalizer.contains("normalizers") && normalizer["normalizers"].is_array()) {
      steps.assign(normalizer["normalizers"].begin(), normalizer["normalizers"].end());
    } else {
      steps.push_back(normalizer);
    }
    for (const json& step : steps) {
      const std::string type = json_type(step);
      if (type == "Prepend") {
        if (json_string(step, "prepend") != tokenizer.space_symbol_) fail("Prepend normalizer of a symbol other than U+2581");
        tokenizer.prepend_space_ = true;
      } else if (type == "Replace") {
        const json& pattern = step.contains("pattern") ? step["pattern"] : json();
        if (!pattern.is_object() || !pattern.contains("String") || pattern["String"] != " " ||
            json_string(step, "content") != tokenizer.space_symbol_) {
          fail("Replace normalizer {} is not supported (only \" \" -> U+2581)", step.dump());
        }
        replaces_spaces = true;
      } else {
        fail("normalizer '{}' is not supported", type);
      }
    }
  }
  if (!pre_tokenizer.is_null() && json_type(pre_tokenizer) == "Split") {
    // Gemma 3: a split at " " after the normalizer has replaced every space finds none: no effect,
    // accepted only with that normalizer.
    const json& pattern = pre_tokenizer.contains("pattern") ? pre_tokenizer["pattern"] : json();
    if (!replaces_spaces || !pattern.is_object() || !pattern.contains("String") || pattern["String"] != " ")
      fail("pre_tokenizer {} is not supported (a Split at \" \" after a Replace normalizer of \" \" is)", pre_tokenizer.dump());
  } else if (!pre_tokenizer.is_null()) {
    const std::string type = json_type(pre_tokenizer);
    if (type != "Metaspace") fail("pre_tokenizer '{}' is not supported (Metaspace, Split and byte-level are)", type);
    if (pre_tokenizer.contains("replacement") && json_string(pre_tokenizer, "replacement") != tokenizer.space_symbol_) {
      fail("Metaspace replacement other than U+2581 is not supported");
    }
    std::string scheme = pre_tokenizer.contains("prepend_scheme") ? json_string(pre_tokenizer, "prepend_scheme") : "always";
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
    return tokenizer.vocab_.id_of(piece).value_or(-1);
  };
  // Llama's <s> and </s>, or Gemma's <bos> and <eos>: a special added token of either name first (Gemma's
  // vocabulary also has an ordinary piece "<s>"), else a piece of the Llama name.
  auto special_added = [&](std::initializer_list<const char*> names) -> std::optional<int> {
    for (const AddedToken& added : tokenizer.vocab_.added) {
      for (const char* name : names) {
        if (added.special && added.content == name) return added.id;
      }
    }
    return std::nullopt;
  };
  tokenizer.bos_id_ = find_special(bos_id ? bos_id : special_added({"<s>", "<bos>"}), "<s>");
  tokenizer.eos_id_ = find_special(eos_id ? eos_id : special_added({"</s>", "<eos>"}), "</s>");
  if (tokenizer.bos_id_ < 0) fail("no beginning-of-sequence token (<s>, <bos>) and none given by config.json");
  tokenizer.added_ = AddedTokenMatcher(tokenizer.vocab_.added);
  return owned;
}

std::vector<int> HfTokenizer::encode_word(std::string_view word) const {
  auto piece_id = [this](std::string_view piece) { return vocab_.id_of(piece); };
  auto byte_id = [this](unsigned char byte) {
    if (byte_ids_[byte] >= 0) return byte_ids_[byte];
    if (unk_id_ >= 0) return unk_id_;
    fail("character byte 0x{:02X} has no piece, no byte fallback and no unk_token", byte);
  };
  return bpe_merge(initial_symbols(word, piece_id, byte_id), [this](int left, int right) { return vocab_.merge(left, right); });
}

std::vector<int> HfTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos) tokens.push_back(bos_id_);
  // Added tokens are found in the raw text first; each stretch between them is normalized alone.
  added_.split(
      text, [&](std::string_view stretch) { encode_stretch(stretch, tokens); }, [&](int id) { tokens.push_back(id); });
  return tokens;
}

void HfTokenizer::encode_stretch(std::string_view text, std::vector<int>& tokens) const {
  if (text.empty()) return;
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
    return;
  }
  // Metaspace split: every word starts at a space symbol.
  size_t start = 0;
  while (start < normalized.size()) {
    size_t next = normalized.find(space_symbol_, start + 1);
    if (next == std::string::npos) next = normalized.size();
    for (int id : encode_word(std::string_view(normalized).substr(start, next - start))) tokens.push_back(id);
    start = next;
  }
}

std::string HfTokenizer::decode(int previous, int token) const {
  if (token < 0 || token >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", token, vocab_size());
  const std::string& piece = vocab_.pieces[token];
  if (auto byte = parse_byte_piece(piece); byte && byte_ids_[*byte] == token) return std::string(1, static_cast<char>(*byte));
  std::string text = visible_spaces_to_spaces(piece);
  if (previous == bos_id_ && prepend_space_ && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

}  // namespace fedcal
