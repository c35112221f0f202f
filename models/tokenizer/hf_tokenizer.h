// Hugging Face tokenizer.json files. parse_hf_tokenizer reads either kind:
//  - the Llama / sentencepiece kind (HfTokenizer below): a BPE model with vocab, ranked merges and byte
//    fallback; spaces become U+2581, with one prepended (Llama: a Prepend/Replace normalizer or a
//    Metaspace pre-tokenizer) or not (Gemma 3: Replace, then a Split at " " that finds none); added
//    tokens are found in the raw text first;
//  - byte-level BPE (Llama 3, Qwen, SmolLM2): ByteLevelBpeTokenizer in byte_level_bpe_tokenizer.h.
#pragma once

#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <optional>
#include <string>
#include <vector>

#include "models/tokenizer/bpe_vocabulary.h"
#include "models/tokenizer/tokenizer.h"

namespace fedcal {

// Parses tokenizer.json text; `source` names it in errors. bos/eos ids from config.json take
// precedence over the pieces named like them.
std::unique_ptr<Tokenizer> parse_hf_tokenizer(const std::string& json_text, const std::string& source,
                                              std::optional<int> bos_id = {}, std::optional<int> eos_id = {});

class HfTokenizer : public Tokenizer {
 public:
  static std::unique_ptr<HfTokenizer> from_json(const nlohmann::json& root, std::optional<int> bos_id, std::optional<int> eos_id);

  std::vector<int> encode(const std::string& text, bool add_bos) const override;
  std::string decode(int previous, int token) const override;
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }
  int vocab_size() const override { return static_cast<int>(vocab_.pieces.size()); }

 private:
  HfTokenizer() = default;
  std::vector<int> encode_word(std::string_view word) const;
  void encode_stretch(std::string_view text, std::vector<int>& tokens) const;  // no added tokens in `text`

  BpeVocabulary vocab_;
  std::vector<int> byte_ids_;  // byte -> "<0xNN>" id, or -1
  int unk_id_ = -1;
  int bos_id_ = -1;
  int eos_id_ = -1;
  bool prepend_space_ = true;
  bool split_on_space_ = false;  // Metaspace split=true: BPE per word
  std::string space_symbol_ = "\xe2\x96\x81";
  AddedTokenMatcher added_;  // into vocab_.added
};

}  // namespace fedcal
