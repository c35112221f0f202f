#include "models/tokenizer/sentencepiece_tokenizer.h"

#include <sentencepiece_processor.h>

#include "common/error.h"
#include "models/tokenizer/bpe.h"

namespace fedcal {
SentencePieceTokenizer::SentencePieceTokenizer(const std::string& path)
    : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {
  const auto status = processor_->Load(path);
  if (!status.ok()) fail("{}: cannot load sentencepiece model: {}", path, status.ToString());
}

SentencePieceTokenizer::SentencePieceTokenizer() : processor_(std::make_unique<sentencepiece::SentencePieceProcessor>()) {}

std::unique_ptr<SentencePieceTokenizer> SentencePieceTokenizer::from_serialized(const std::string& bytes,
                                                                                const std::string& source) {
  std::unique_ptr<SentencePieceTokenizer> tokenizer(new SentencePieceTokenizer());
  const auto status = tokenizer->processor_->LoadFromSerializedProto(bytes);
  if (!status.ok()) fail("{}: cannot load sentencepiece model: {}", source, status.ToString());
  return tokenizer;
}

SentencePieceTokenizer::~SentencePieceTokenizer() = default;

std::vector<int> SentencePieceTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> ids;
  if (add_bos) ids.push_back(bos_id());
  std::vector<int> pieces;
  const auto status = processor_->Encode(text, &pieces);
  if (!status.ok()) fail("sentencepiece encode failed: {}", status.ToString());
  ids.insert(ids.end(), pieces.begin(), pieces.end());
  return ids;
}

std::string SentencePieceTokenizer::decode(int previous, int token) const {
  if (token < 0 || token >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", token, vocab_size());
  if (processor_->IsControl(token)) return "";
  const std::string& piece = processor_->IdToPiece(token);
  if (processor_->IsByte(token)) {
    if (auto byte = parse_byte_piece(piece)) return std::string(1, static_cast<char>(*byte));
  }
  std::string text = visible_spaces_to_spaces(piece);
  if (previous == bos_id() && !text.empty() && text[0] == ' ') text.erase(0, 1);
  return text;
}

int SentencePieceTokenizer::bos_id() const { return processor_->bos_id(); }
int SentencePieceTokenizer::eos_id() const { return processor_->eos_id(); }
int SentencePieceTokenizer::vocab_size() const { return processor_->GetPieceSize(); }

std::vector<SentencePieceTokenizer::Piece> SentencePieceTokenizer::pieces() const {
  std::vector<Piece> out;
  for (int id = 0; id < vocab_size(); ++id) {
    PieceKind kind = PieceKind::kNormal;
    if (processor_->IsUnknown(id)) kind = PieceKind::kUnknown;
    else if (processor_->IsControl(id)) kind = PieceKind::kControl;
    else if (processor_->IsUnused(id)) kind = PieceKind::kUnused;
    else if (processor_->IsByte(id)) kind = PieceKind::kByte;
    out.push_back({processor_->IdToPiece(id), processor_->GetScore(id), kind});
  }
  return out;
}

}  // namespace fedcal
