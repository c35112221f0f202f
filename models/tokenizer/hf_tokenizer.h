// A Hugging Face tokenizer.json of the Llama / sentencepiece kind: a BPE model with vocab, ranked
// merges and byte fallback; spaces become U+2581 with one prepended (through a Prepend/Replace
// normalizer or a Metaspace pre-tokenizer). Byte-level (GPT-2 style) tokenizers are refused by name.
#pragma once

#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace fedcal {

class HfTokenizer : public Tokenizer {
 public:
  // Parses tokenizer.json text; `source` names it in errors. bos/eos ids from config.json take
  // precedence over the "<s>" / "</s>" pieces.
  static HfTokenizer parse(const std::string& json_text, const std::string& source, std::optional<int> bos_id = {},
                           std::optional<int> eos_id = {});
  static HfTokenizer read(const std::string& path, std::optional<int> bos_id = {}, std::optional<int> eos_id = {});

  std::vector<int> encode(const std::string& text, bool add_bos) const override;
  std::string decode(int previous, int token) const override;
  int bos_id() const override { return bos_id_; }
  int eos_id() const override { return eos_id_; }
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }

 private:
  HfTokenizer() = default;
  std::vector<int> encode_word(std::string_view word) const;

  std::vector<std::string> pieces_;           // id -> piece
  std::unordered_map<std::string, int> ids_;  // piece -> id
  struct Merge {
    int rank;
    int merged_id;
  };
  std::unordered_map<uint64_t, Merge> merges_;  // (left id << 32 | right id) -> merge
  std::vector<int> byte_ids_;                   // byte -> "<0xNN>" id, or -1
  int unk_id_ = -1;
  int bos_id_ = -1;
  int eos_id_ = -1;
  bool prepend_space_ = true;
  bool split_on_space_ = false;  // Metaspace split=true: BPE per word
  std::string space_symbol_ = "\xe2\x96\x81";
};

}  // namespace fedcal
