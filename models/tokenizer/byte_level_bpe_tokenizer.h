// A byte-level (GPT-2 style) BPE tokenizer.json, as Llama 3, Qwen2/Qwen3 and SmolLM2 use: added and
// special tokens are cut out first; the rest is NFC-normalized if the file says so, split into words
// by the pre-tokenizer (Split regex / Digits / ByteLevel, see pretokenizer.h), each word's bytes are
// mapped to the 256 byte characters and merged by rank. Any byte sequence encodes, invalid UTF-8
// included, and decoding gives the bytes back.
#pragma once

#include <array>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "models/tokenizer/bpe_vocabulary.h"
#include "models/tokenizer/pretokenizer.h"
#include "models/tokenizer/tokenizer.h"

namespace fedcal {

// GPT-2's byte characters in UTF-8: the piece that stands for each byte in a byte-level vocabulary
// (printable Latin-1 bytes for themselves, the other 68 for U+0100 onwards in byte order).
std::array<std::string, 256> byte_level_pieces();

class ByteLevelBpeTokenizer : public Tokenizer {
 public:
  // `root` is a parsed tokenizer.json whose pre_tokenizer has a ByteLevel step. Anything in it that
  // would change the ids and is not implemented is refused, naming the field. Without bos/eos ids
  // (from config.json), a top-level "fedcal": {"bos_token_id", "eos_token_id"} gives them (written
  // when a GGUF tokenizer is imported), else the family's usual pieces.
  static std::unique_ptr<ByteLevelBpeTokenizer> from_json(const nlohmann::json& root, std::optional<int> bos_id,
                                                          std::optional<int> eos_id);

  std::vector<int> encode(const std::string& text, bool add_bos) const override;
  std::string decode(int previous, int token) const override;
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }
  int vocab_size() const override { return static_cast<int>(vocab_.pieces.size()); }

  const BpeVocabulary& vocabulary() const { return vocab_; }
  // llama.cpp's tokenizer.ggml.pre name for this normalizer and pre-tokenizer ("llama-bpe", "qwen2",
  // "gpt2", "smollm"), or nullopt when llama.cpp has none that splits the same way.
  std::optional<std::string> gguf_pre() const;

 private:
  ByteLevelBpeTokenizer() = default;
  void encode_text(std::string_view text, std::vector<int>& out) const;  // no added tokens in `text`
  void encode_word(std::string_view word, std::vector<int>& out) const;

  struct Step {  // one pre-tokenizer step before the byte mapping
    enum Kind { kSplit, kDigits } kind;
    SplitPattern pattern;  // kSplit
    bool individual;       // kDigits
  };
  BpeVocabulary vocab_;
  std::vector<Step> steps_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  std::array<int, 256> byte_ids_{};                                      // byte -> id of its byte character
  std::array<std::string, 256> byte_chars_;                              // byte -> its byte character in UTF-8
  std::vector<std::string> token_bytes_;                                 // id -> the bytes it decodes to
  AddedTokenMatcher added_;                                              // into vocab_.added
  int bos_id_ = -1;
  int eos_id_ = -1;
};

}  // namespace fedcal
