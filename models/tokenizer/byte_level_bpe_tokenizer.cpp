#include "models/tokenizer/byte_level_bpe_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "common/error.h"
#include "models/tokenizer/unicode.h"

namespace fedcal {
namespace {

using nlohmann::json;

// GPT-2's bytes_to_unicode: printable Latin-1 bytes stand for themselves, the other 68 bytes (controls,
// space, 0x7F-0xA0, 0xAD) for U+0100 onwards in byte order, so every byte is a visible character.
std::array<char32_t, 256> byte_characters() {
  std::array<char32_t, 256> table{};
  char32_t next = 256;
  for (int byte = 0; byte < 256; ++byte) {
    const bool printable = (byte >= '!' && byte <= '~') || (byte >= 0xa1 && byte <= 0xac) || byte >= 0xae;
    table[byte] = printable ? static_cast<char32_t>(byte) : next++;
  }
  return table;
}

bool flag(const json& node, const char* field, bool fallback) {
  auto it = node.find(field);
  if (it == node.end() || it->is_null()) return fallback;
  if (!it->is_boolean()) fail("'{}' is not true or false", field);
  return it->get<bool>();
}

std::vector<json> sequence_steps(const json& node, const char* list_field) {
  if (json_type(node) == "Sequence") {
    if (!node.contains(list_field) || !node[list_field].is_array()) fail("Sequence without a '{}' list", list_field);
    return {node[list_field].begin(), node[list_field].end()};
  }
  if (node.is_null()) return {};
  return {node};
}

}  // namespace

std::array<std::string, 256> byte_level_pieces() {
  const std::array<char32_t, 256> characters = byte_characters();
  std::array<std::string, 256> pieces;
  for (size_t byte = 0; byte < 256; ++byte) append_utf8(pieces[byte], characters[byte]);
  return pieces;
}

std::unique_ptr<ByteLevelBpeTokenizer> ByteLevelBpeTokenizer::from_json(const json& root, std::optional<int> bos_id,
                                                                        std::optional<int> eos_id) {
  std::unique_ptr<ByteLevelBpeTokenizer> t(new ByteLevelBpeTokenizer());
  t->vocab_ = parse_bpe_vocabulary(root);
  const json& model = root["model"];
  if (flag(model, "byte_fallback", false)) fail("model.byte_fallback is set, which a byte-level vocabulary does not use");
  for (const char* field : {"continuing_subword_prefix", "end_of_word_suffix"}) {
    if (model.contains(field) && !model[field].is_null() && model[field] != "")
      fail("model.{} {} is not supported", field, model[field].dump());
  }
  if (model.contains("dropout") && !model["dropout"].is_null() && model["dropout"] != 0 && model["dropout"] != 0.0)
    fail("model.dropout {} is not supported (it makes encoding random)", model["dropout"].dump());
  t->ignore_merges_ = flag(model, "ignore_merges", false);

  const json& normalizer = root.contains("normalizer") ? root["normalizer"] : json();
  for (const json& step : sequence_steps(normalizer, "normalizers")) {
    if (json_type(step) != "NFC") fail("normalizer '{}' is not supported (NFC is)", json_type(step));
    t->nfc_ = true;
  }

  const json& pre_tokenizer = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : json();
  const std::vector<json> steps = sequence_steps(pre_tokenizer, "pretokenizers");
  if (steps.empty() || json_type(steps.back()) != "ByteLevel") fail("pre_tokenizer: a ByteLevel step must come last");
  for (const json& step : steps) {
    const std::string type = json_type(step);
    if (type == "Split") {
      const json& pattern = step.contains("pattern") ? step["pattern"] : json();
      if (!pattern.is_object() || !pattern.contains("Regex") || !pattern["Regex"].is_string())
        fail("pre_tokenizer Split: only a Regex pattern is supported, not {}", pattern.dump());
      const std::string regex = pattern["Regex"].get<std::string>();
      const auto known = split_pattern_from_regex(regex);
      if (!known) fail("pre_tokenizer Split regex {} is not one fedcal implements (GPT-2, Llama 3, Qwen2)", json(regex).dump());
      if (step.contains("behavior") && step["behavior"] != "Isolated")
        fail("pre_tokenizer Split behavior {} is not supported (Isolated is)", step["behavior"].dump());
      if (flag(step, "invert", false)) fail("pre_tokenizer Split with invert true is not supported");
      t->steps_.push_back({Step::kSplit, *known, false});
    } else if (type == "Digits") {
      t->steps_.push_back({Step::kDigits, SplitPattern::kGpt2, flag(step, "individual_digits", false)});
    } else if (type == "ByteLevel") {
      if (&step != &steps.back()) fail("pre_tokenizer: ByteLevel must be the last step");
      if (flag(step, "add_prefix_space", true))
        fail("pre_tokenizer ByteLevel with add_prefix_space true is not supported (Llama 3, Qwen and SmolLM2 use false)");
      if (flag(step, "use_regex", true)) t->steps_.push_back({Step::kSplit, SplitPattern::kGpt2, false});
    } else {
      fail("pre_tokenizer '{}' is not supported in a byte-level tokenizer (Split, Digits, ByteLevel are)", type);
    }
  }
  const json& decoder = root.contains("decoder") ? root["decoder"] : json();
  if (!decoder.is_null() && json_type(decoder) != "ByteLevel")
    fail("decoder '{}' is not supported with a ByteLevel pre-tokenizer (ByteLevel is)", json_type(decoder));

  // Byte characters and what each token decodes to.
  const std::array<char32_t, 256> characters = byte_characters();
  std::unordered_map<char32_t, unsigned char> byte_of;
  for (int byte = 0; byte < 256; ++byte) {
    append_utf8(t->byte_chars_[byte], characters[byte]);
    byte_of.emplace(characters[byte], static_cast<unsigned char>(byte));
    const auto id = t->vocab_.id_of(t->byte_chars_[byte]);
    if (!id) fail("the vocabulary has no piece for byte 0x{:02X} ('{}'), which byte-level BPE needs", byte, t->byte_chars_[byte]);
    t->byte_ids_[byte] = *id;
  }
  t->token_bytes_.resize(t->vocab_.pieces.size());
  std::vector<bool> is_added(t->vocab_.pieces.size(), false);
  for (const AddedToken& added : t->vocab_.added) {
    is_added[added.id] = true;
    t->token_bytes_[added.id] = added.content;
  }
  t->added_ = AddedTokenMatcher(t->vocab_.added);
  for (size_t id = 0; id < t->vocab_.pieces.size(); ++id) {
    if (is_added[id]) continue;
    std::string& bytes = t->token_bytes_[id];
    for (const CodePoint& point : decode_utf8(t->vocab_.pieces[id])) {
      auto it = byte_of.find(point.value);
      if (it == byte_of.end())
        fail("piece {} (id {}) has a character that is not a byte character", json(t->vocab_.pieces[id]).dump(), id);
      bytes += static_cast<char>(it->second);
    }
  }

  auto special = [&](std::optional<int> configured, std::initializer_list<const char*> names, const char* what) {
    if (configured) {
      if (*configured < 0 || *configured >= t->vocab_size()) fail("{} token id {} is outside the vocabulary", what, *configured);
      return *configured;
    }
    for (const char* name : names) {
      if (auto id = t->vocab_.id_of(name)) return *id;
    }
    return -1;
  };
  const json& ids = root.contains("fedcal") && root["fedcal"].is_object() ? root["fedcal"] : json::object();
  for (auto [field, configured] : {std::pair{"bos_token_id", &bos_id}, std::pair{"eos_token_id", &eos_id}}) {
    if (!*configured && ids.contains(field)) {
      if (!ids[field].is_number_integer()) fail("fedcal.{} is not an integer", field);
      *configured = ids[field].get<int>();
    }
  }
  t->bos_id_ = special(bos_id, {"<|begin_of_text|>", "<s>", "<|endoftext|>"}, "beginning-of-sequence");
  t->eos_id_ = special(eos_id, {"<|end_of_text|>", "<|endoftext|>", "</s>"}, "end-of-sequence");
  if (t->bos_id_ < 0)
    fail("no beginning-of-sequence token (<|begin_of_text|>, <s>, <|endoftext|>) and none given by config.json");
  return t;
}

std::optional<std::string> ByteLevelBpeTokenizer::gguf_pre() const {
  auto is = [&](std::initializer_list<Step> expected) {
    return std::equal(steps_.begin(), steps_.end(), expected.begin(), expected.end(), [](const Step& a, const Step& b) {
      return a.kind == b.kind && (a.kind == Step::kSplit ? a.pattern == b.pattern : a.individual == b.individual);
    });
  };
  if (!nfc_ && is({{Step::kSplit, SplitPattern::kLlama3, false}})) return "llama-bpe";
  if (nfc_ && is({{Step::kSplit, SplitPattern::kQwen2, false}})) return "qwen2";
  if (!nfc_ && is({{Step::kSplit, SplitPattern::kGpt2, false}})) return "gpt2";
  if (!nfc_ && is({{Step::kDigits, SplitPattern::kGpt2, true}, {Step::kSplit, SplitPattern::kGpt2, false}})) return "smollm";
  return std::nullopt;
}

void ByteLevelBpeTokenizer::encode_word(std::string_view word, std::vector<int>& out) const {
  std::vector<int> symbols;
  symbols.reserve(word.size());
  for (char byte : word) symbols.push_back(byte_ids_[static_cast<unsigned char>(byte)]);
  if (ignore_merges_ && symbols.size() > 1) {
    std::string mapped;
    for (char byte : word) mapped += byte_chars_[static_cast<unsigned char>(byte)];
    if (auto id = vocab_.id_of(mapped)) {
      out.push_back(*id);
      return;
    }
  }
  for (int id : bpe_merge(std::move(symbols), [this](int left, int right) { return vocab_.merge(left, right); }))
    out.push_back(id);
}

void ByteLevelBpeTokenizer::encode_text(std::string_view text, std::vector<int>& out) const {
  if (text.empty()) return;
  const std::string normalized = nfc_ ? nfc(text) : std::string(text);
  std::vector<std::string_view> pieces = {normalized};
  std::vector<std::string_view> next;
  for (const Step& step : steps_) {
    next.clear();
    for (std::string_view piece : pieces) {
      const auto split = step.kind == Step::kSplit ? split_words(piece, step.pattern) : split_digits(piece, step.individual);
      next.insert(next.end(), split.begin(), split.end());
    }
    pieces.swap(next);
  }
  for (std::string_view piece : pieces) encode_word(piece, out);
}

std::vector<int> ByteLevelBpeTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos) tokens.push_back(bos_id_);
  // Added tokens are matched in the raw text first, leftmost and then longest.
  added_.split(
      text, [&](std::string_view stretch) { encode_text(stretch, tokens); }, [&](int id) { tokens.push_back(id); });
  return tokens;
}

std::string ByteLevelBpeTokenizer::decode(int /*previous*/, int token) const {
  if (token < 0 || token >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", token, vocab_size());
  return token_bytes_[token];
}

}  // namespace fedcal
