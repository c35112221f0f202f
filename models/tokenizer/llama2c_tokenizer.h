// llama2.c's tokenizer.bin: int32 max_token_length, then for each of vocab_size pieces: float32 merge
// score, int32 byte length, the bytes. The vocabulary size is not stored; it comes from the model.
// Encoding: a dummy-prefix " " piece, one symbol per UTF-8 character (byte fallback <0xNN> otherwise),
// then merges by highest piece score. Ids 1 and 2 are <s> and </s>.
#pragma once

#include <span>
#include <string>
#include <unordered_map>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace fedcal {

struct TokenizerPiece {
  std::string text;
  float score = 0.0f;
};

class Llama2cTokenizer : public Tokenizer {
 public:
  // Throws Error naming `source` on a truncated file, a negative or oversized length, or a NaN score.
  static Llama2cTokenizer parse(std::span<const std::byte> bytes, int vocab_size, const std::string& source);
  static Llama2cTokenizer read(const std::string& path, int vocab_size);
  explicit Llama2cTokenizer(std::vector<TokenizerPiece> pieces);

  std::vector<int> encode(const std::string& text, bool add_bos) const override;
  std::string decode(int previous, int token) const override;
  int bos_id() const override { return 1; }
  int eos_id() const override { return 2; }
  int vocab_size() const override { return static_cast<int>(pieces_.size()); }

  const std::vector<TokenizerPiece>& pieces() const { return pieces_; }
  // The tokenizer.bin bytes of these pieces.
  std::string serialize() const;
  void write(const std::string& path) const;

 private:
  std::vector<TokenizerPiece> pieces_;
  std::unordered_map<std::string, int> ids_;  // piece text -> lowest id with that text
  std::vector<int> byte_ids_;                 // byte -> id of "<0xNN>", or -1
  int max_token_length_ = 0;
};

}  // namespace fedcal
