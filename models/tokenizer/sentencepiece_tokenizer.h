// A sentencepiece tokenizer.model, through libsentencepiece.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "models/tokenizer/tokenizer.h"

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace fedcal {

class SentencePieceTokenizer : public Tokenizer {
 public:
  // Throws Error naming `path` if it is not a loadable sentencepiece model.
  explicit SentencePieceTokenizer(const std::string& path);
  // From a tokenizer.model file's bytes; `source` names them in errors.
  static std::unique_ptr<SentencePieceTokenizer> from_serialized(const std::string& bytes, const std::string& source);
  ~SentencePieceTokenizer() override;

  std::vector<int> encode(const std::string& text, bool add_bos) const override;
  std::string decode(int previous, int token) const override;
  int bos_id() const override;
  int eos_id() const override;
  int vocab_size() const override;

  // Every piece as the model stores it ("▁" for spaces), its score and kind: what GGUF's
  // tokenizer.ggml.tokens / scores / token_type carry.
  enum class PieceKind { kNormal, kUnknown, kControl, kUnused, kByte };
  struct Piece {
    std::string text;
    float score = 0;
    PieceKind kind = PieceKind::kNormal;
  };
  std::vector<Piece> pieces() const;

 private:
  SentencePieceTokenizer();
  std::unique_ptr<sentencepiece::SentencePieceProcessor> processor_;
};

}  // namespace fedcal
