#include "models/format/gguf_tokenizer.h"

#include <algorithm>
#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/tokenizer/bpe.h"
#include "models/tokenizer/byte_level_bpe_tokenizer.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "models/tokenizer/pretokenizer.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"

namespace fedcal {
namespace {

// llama.cpp's token types (llama_token_type).
enum TokenType : int32_t { kNormal = 1, kUnknown = 2, kControl = 3, kUserDefined = 4, kUnused = 5, kByte = 6 };

struct Vocab {
  std::vector<std::string> tokens;
  std::vector<float> scores;
  std::vector<int32_t> types;
  int bos = 1, eos = 2, unknown = 0;
};

void pad_vocab(Vocab& vocab, int vocab_size) {
  if (static_cast<int>(vocab.tokens.size()) > vocab_size) {
    fail("GGUF export: the tokenizer has {} pieces, the model {} embeddings", vocab.tokens.size(), vocab_size);
  }
  // A model with more embeddings than pieces: the rest are unused, as llama.cpp's converter pads them.
  for (int id = static_cast<int>(vocab.tokens.size()); id < vocab_size; ++id) {
    vocab.tokens.push_back(fmt::format("[PAD{}]", id));
    vocab.scores.push_back(0);
    vocab.types.push_back(kUnused);
  }
}

Vocab vocab_of(const PackageTokenizer& tokenizer, int vocab_size) {
  Vocab vocab;
  if (tokenizer.kind == "sentencepiece") {
    const auto processor = SentencePieceTokenizer::from_serialized(tokenizer.data, "tokenizer.model");
    using Kind = SentencePieceTokenizer::PieceKind;
    for (const auto& piece : processor->pieces()) {
      vocab.tokens.push_back(piece.text);
      vocab.scores.push_back(piece.score);
      vocab.types.push_back(piece.kind == Kind::kUnknown   ? kUnknown
                            : piece.kind == Kind::kControl ? kControl
                            : piece.kind == Kind::kUnused  ? kUnused
                            : piece.kind == Kind::kByte    ? kByte
                                                           : kNormal);
    }
    vocab.bos = processor->bos_id();
    vocab.eos = processor->eos_id();
  } else if (tokenizer.kind == "llama2c") {
    const Llama2cTokenizer parsed =
        Llama2cTokenizer::parse(std::as_bytes(std::span(tokenizer.data)), vocab_size, "tokenizer.bin");
    // llama2.c's export wrote sentencepiece's pieces with "▁" as " " and <s>, </s> as "\n<s>\n", "\n</s>\n".
    for (size_t id = 0; id < parsed.pieces().size(); ++id) {
      const TokenizerPiece& piece = parsed.pieces()[id];
      int32_t type = kNormal;
      std::string text = piece.text;
      if (id == 0) {
        type = kUnknown;
      } else if (static_cast<int>(id) == parsed.bos_id() || static_cast<int>(id) == parsed.eos_id()) {
        type = kControl;
        text = static_cast<int>(id) == parsed.bos_id() ? "<s>" : "</s>";
      } else if (parse_byte_piece(text)) {
        type = kByte;
      } else {
        text = spaces_to_visible_spaces(text);
      }
      vocab.tokens.push_back(text);
      vocab.scores.push_back(piece.score);
      vocab.types.push_back(type);
    }
  } else {
    fail(
        "GGUF export: a '{}' tokenizer is not supported yet (sentencepiece tokenizer.model, llama2.c tokenizer.bin and "
        "byte-level tokenizer.json are)",
        tokenizer.kind);
  }
  pad_vocab(vocab, vocab_size);
  return vocab;
}

// A byte-level tokenizer.json as tokenizer.ggml.model "gpt2".
void set_gpt2_tokenizer(GgufWriter& out, const std::string& tokenizer_json, int vocab_size) {
  const nlohmann::json root = nlohmann::json::parse(tokenizer_json, nullptr, false);
  if (root.is_discarded()) fail("GGUF export: the packaged tokenizer.json is not JSON");
  const auto tokenizer = ByteLevelBpeTokenizer::from_json(root, std::nullopt, std::nullopt);
  const std::optional<std::string> pre = tokenizer->gguf_pre();
  if (!pre)
    fail(
        "GGUF export: llama.cpp has no pre-tokenizer that splits like this tokenizer.json (it knows Llama 3, Qwen2, GPT-2, "
        "SmolLM)");
  const BpeVocabulary& v = tokenizer->vocabulary();
  Vocab vocab;
  vocab.tokens = v.pieces;
  vocab.types.assign(v.pieces.size(), kNormal);
  for (const AddedToken& added : v.added) vocab.types[added.id] = added.special ? kControl : kUserDefined;
  pad_vocab(vocab, vocab_size);
  std::vector<std::pair<int, std::string>> ranked;
  for (const auto& [pair, merge] : v.merges) {
    ranked.emplace_back(merge.rank, v.pieces[pair >> 32] + " " + v.pieces[pair & 0xffffffffu]);
  }
  std::sort(ranked.begin(), ranked.end());
  std::vector<std::string> merges;
  for (auto& [rank, text] : ranked) merges.push_back(std::move(text));
  out.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  out.set("tokenizer.ggml.pre", GgufValue::string(*pre));
  out.set("tokenizer.ggml.tokens", GgufValue::string_array(vocab.tokens));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(vocab.types));
  out.set("tokenizer.ggml.merges", GgufValue::string_array(std::move(merges)));
  out.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(tokenizer->bos_id())));
  if (tokenizer->eos_id() >= 0)
    out.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(tokenizer->eos_id())));
  out.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(*pre == "llama-bpe"));
  out.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
}

// tokenizer.ggml.tokens (strings, at least one, at most one per embedding) and token_type (absent, or
// one integer per token), checked.
struct GgufTokens {
  const GgufValue* tokens;
  const GgufValue* types;  // may be null
};
GgufTokens gguf_tokens(const GgufFile& file, int vocab_size) {
  const GgufValue* tokens = file.find("tokenizer.ggml.tokens");
  const GgufValue* types = file.find("tokenizer.ggml.token_type");
  if (!tokens || !tokens->array || tokens->type != GgufType::kString)
    fail("{}: tokenizer.ggml.tokens is missing or not strings", file.source);
  const size_t count = tokens->strings.size();
  if (count == 0 || count > static_cast<size_t>(vocab_size))
    fail("{}: {} tokens for {} embeddings", file.source, count, vocab_size);
  if (types && (!types->array || types->ints.size() != count))
    fail("{}: tokenizer.ggml.token_type must hold one integer per token", file.source);
  return {tokens, types};
}

PackageTokenizer llama_tokenizer_of(const GgufFile& file, int vocab_size) {
  const auto [tokens, types] = gguf_tokens(file, vocab_size);
  const size_t count = tokens->strings.size();
  const GgufValue* scores = file.find("tokenizer.ggml.scores");
  if (!scores || !scores->array || scores->floats.size() != count)
    fail("{}: tokenizer.ggml.scores must hold one float per token", file.source);
  // fedcal's sentencepiece-style tokenizer has <s> at 1 and </s> at 2, as every llama-type vocabulary fedcal knows.
  for (const auto& [key, id] :
       {std::pair<const char*, int64_t>{"tokenizer.ggml.bos_token_id", 1}, {"tokenizer.ggml.eos_token_id", 2}}) {
    if (file.find(key) && file.integer(key) != id)
      fail("{}: {} = {} (fedcal's llama tokenizer needs {})", file.source, key, file.integer(key), id);
  }
  std::vector<TokenizerPiece> pieces;
  for (size_t id = 0; id < count; ++id) {
    std::string text = tokens->strings[id];
    if (id == 1 || id == 2) {
      text = id == 1 ? "\n<s>\n" : "\n</s>\n";  // llama2.c's spelling: never the result of merging text
    } else if (!types || types->ints[id] != kByte) {
      text = visible_spaces_to_spaces(text);
    }
    pieces.push_back({std::move(text), static_cast<float>(scores->floats[id])});
  }
  // A llama2.c tokenizer.bin holds one piece per embedding; the rest never come out of merging text.
  for (int id = static_cast<int>(count); id < vocab_size; ++id) pieces.push_back({fmt::format("\n[PAD{}]\n", id), -1e9f});
  return {"llama2c", Llama2cTokenizer(std::move(pieces)).serialize()};
}

// tokenizer.ggml.model "gpt2" as the tokenizer.json it stands for.
PackageTokenizer gpt2_tokenizer_of(const GgufFile& file, int vocab_size) {
  const auto [tokens, types] = gguf_tokens(file, vocab_size);
  const size_t count = tokens->strings.size();
  const GgufValue* merges = file.find("tokenizer.ggml.merges");
  if (!merges || !merges->array || merges->type != GgufType::kString)
    fail("{}: tokenizer.ggml.merges is missing or not strings", file.source);
  const std::string pre = file.find("tokenizer.ggml.pre") ? file.text("tokenizer.ggml.pre") : "default";

  // The pre-tokenizer llama.cpp runs for each name, as tokenizer.json spells it.
  auto split = [](SplitPattern pattern) {
    return nlohmann::json{{"type", "Split"},
                {"pattern", {{"Regex", std::string(split_pattern_regex(pattern))}}},
                {"behavior", "Isolated"},
                {"invert", false}};
  };
  const nlohmann::json byte_level = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}};
  const nlohmann::json byte_level_gpt2 = {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", true}};
  nlohmann::json steps, normalizer;
  bool ignore_merges = false;
  if (pre == "llama-bpe" || pre == "llama3" || pre == "llama-v3") {
    steps = {split(SplitPattern::kLlama3), byte_level};
    ignore_merges = true;  // as Llama 3's tokenizer.json and llama.cpp do
  } else if (pre == "qwen2") {
    steps = {split(SplitPattern::kQwen2), byte_level};
    normalizer = {{"type", "NFC"}};  // Qwen's tokenizer.json normalizes; GGUF does not record it
  } else if (pre == "gpt2" || pre == "default") {
    steps = {byte_level_gpt2};
  } else if (pre == "smollm") {
    steps = {{{"type", "Digits"}, {"individual_digits", true}}, byte_level_gpt2};
  } else {
    fail("{}: tokenizer.ggml.pre '{}' is not supported (llama-bpe, qwen2, gpt2, smollm are)", file.source, pre);
  }
  // Padding past the real vocabulary (unused tokens at the end, as llama.cpp's converter writes them)
  // is the model's, not the tokenizer's.
  size_t used = count;
  while (used > 1 && types && types->ints[used - 1] == kUnused) --used;
  nlohmann::json vocab = nlohmann::json::object();
  nlohmann::json added = nlohmann::json::array();
  for (size_t id = 0; id < used; ++id) {
    const int64_t type = types ? types->ints[id] : int64_t{kNormal};
    const std::string& text = tokens->strings[id];
    if (type == kControl || type == kUserDefined) {
      added.push_back({{"id", id}, {"content", text}, {"special", type == kControl}, {"normalized", false}});
    } else if (type == kNormal || type == kUnused || type == kUnknown) {
      if (vocab.contains(text))
        fail("{}: token '{}' appears twice (ids {} and {})", file.source, text, vocab[text].get<int64_t>(), id);
      vocab[text] = id;
    } else {
      fail("{}: token {} has type {}, which a gpt2 vocabulary does not use", file.source, id, type);
    }
  }
  nlohmann::json root = {
      {"model", {{"type", "BPE"}, {"vocab", std::move(vocab)}, {"merges", merges->strings}, {"ignore_merges", ignore_merges}}},
      {"added_tokens", std::move(added)},
      {"normalizer", normalizer},
      {"pre_tokenizer", {{"type", "Sequence"}, {"pretokenizers", steps}}},
      {"decoder", {{"type", "ByteLevel"}}}};
  nlohmann::json ids = nlohmann::json::object();
  if (file.find("tokenizer.ggml.bos_token_id")) ids["bos_token_id"] = file.integer("tokenizer.ggml.bos_token_id");
  if (file.find("tokenizer.ggml.eos_token_id")) ids["eos_token_id"] = file.integer("tokenizer.ggml.eos_token_id");
  root["fedcal"] = ids;
  PackageTokenizer out{"hf-json", root.dump()};
  // Refuse here, naming the file, what the tokenizer would refuse later.
  with_context([&] { return file.source + " (tokenizer.ggml.*)"; },
               [&] { ByteLevelBpeTokenizer::from_json(root, std::nullopt, std::nullopt); });
  return out;
}

}  // namespace

void set_gguf_tokenizer(GgufWriter& out, const PackageTokenizer& tokenizer, int vocab_size) {
  if (tokenizer.kind == "hf-json") {
    set_gpt2_tokenizer(out, tokenizer.data, vocab_size);
    return;
  }
  Vocab vocab = vocab_of(tokenizer, vocab_size);
  out.set("tokenizer.ggml.model", GgufValue::string("llama"));
  out.set("tokenizer.ggml.tokens", GgufValue::string_array(vocab.tokens));
  out.set("tokenizer.ggml.scores", GgufValue::f32_array(vocab.scores));
  out.set("tokenizer.ggml.token_type", GgufValue::i32_array(vocab.types));
  out.set("tokenizer.ggml.bos_token_id", GgufValue::u32(static_cast<uint32_t>(vocab.bos)));
  out.set("tokenizer.ggml.eos_token_id", GgufValue::u32(static_cast<uint32_t>(vocab.eos)));
  out.set("tokenizer.ggml.unknown_token_id", GgufValue::u32(static_cast<uint32_t>(vocab.unknown)));
  out.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  out.set("tokenizer.ggml.add_eos_token", GgufValue::boolean(false));
}

PackageTokenizer gguf_tokenizer(const GgufFile& file, int vocab_size) {
  const std::string model = file.text("tokenizer.ggml.model");
  if (model == "llama") return llama_tokenizer_of(file, vocab_size);
  if (model == "gpt2") return gpt2_tokenizer_of(file, vocab_size);
  fail("{}: tokenizer.ggml.model '{}' is not supported (fedcal reads 'llama', sentencepiece-style, and 'gpt2', byte-level)",
       file.source, model);
}

}  // namespace fedcal
