// Text <-> token ids. Implementations: llama2.c tokenizer.bin, sentencepiece tokenizer.model,
// Hugging Face tokenizer.json (BPE with merges and byte fallback).
#pragma once

#include <string>
#include <vector>

namespace fedcal {

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;
  // Encodes `text`, with the beginning-of-sequence token first when `add_bos`.
  virtual std::vector<int> encode(const std::string& text, bool add_bos) const = 0;
  // The text of `token` when it follows `previous` (leading-space and byte-fallback rules applied).
  virtual std::string decode(int previous, int token) const = 0;
  virtual int bos_id() const = 0;
  virtual int eos_id() const = 0;
  virtual int vocab_size() const = 0;

  std::string decode_all(const std::vector<int>& tokens) const;
};

}  // namespace fedcal
