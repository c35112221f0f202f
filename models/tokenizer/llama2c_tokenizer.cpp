#include "models/tokenizer/llama2c_tokenizer.h"

#include <cmath>
#include <cstdint>

#include "common/byte_reader.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/mapped_file.h"
#include "models/tokenizer/bpe.h"

namespace fedcal {
namespace {
constexpr int32_t kMaxPieceBytes = 1 << 16;
}

Llama2cTokenizer Llama2cTokenizer::parse(std::span<const std::byte> bytes, int vocab_size, const std::string& source) {
  if (vocab_size < 3) fail("{}: vocabulary size {} is too small (needs <unk>, <s>, </s>)", source, vocab_size);
  ByteReader reader(bytes, source);
  const int32_t max_length = reader.read<int32_t>("max_token_length");
  if (max_length < 1 || max_length > kMaxPieceBytes) fail("{}: max_token_length {} is out of range", source, max_length);
  std::vector<TokenizerPiece> pieces;
  pieces.reserve(vocab_size);
  for (int i = 0; i < vocab_size; ++i) {
    TokenizerPiece piece;
    piece.score = reader.read<float>("piece score");
    if (std::isnan(piece.score)) fail("{}: piece {} has a NaN score", source, i);
    const int32_t length = reader.read<int32_t>("piece length");
    if (length < 0 || length > max_length) {
      fail("{}: piece {} has length {}, outside [0, max_token_length {}]", source, i, length, max_length);
    }
    auto text = reader.take(static_cast<size_t>(length), "piece bytes");
    piece.text.assign(reinterpret_cast<const char*>(text.data()), text.size());
    pieces.push_back(std::move(piece));
  }
  if (reader.remaining() != 0) {
    fail("{}: {} bytes left after {} pieces: the vocabulary size of the model ({}) does not match this tokenizer", source,
         reader.remaining(), vocab_size, vocab_size);
  }
  return Llama2cTokenizer(std::move(pieces));
}

Llama2cTokenizer Llama2cTokenizer::read(const std::string& path, int vocab_size) {
  MappedFile file(path);
  return parse(file.bytes(), vocab_size, path);
}

Llama2cTokenizer::Llama2cTokenizer(std::vector<TokenizerPiece> pieces) : pieces_(std::move(pieces)), byte_ids_(256, -1) {
  for (int id = 0; id < static_cast<int>(pieces_.size()); ++id) {
    const std::string& text = pieces_[id].text;
    ids_.emplace(text, id);
    if (auto byte = parse_byte_piece(text); byte && byte_ids_[*byte] < 0) byte_ids_[*byte] = id;
    max_token_length_ = std::max(max_token_length_, static_cast<int>(text.size()));
  }
}

std::vector<int> Llama2cTokenizer::encode(const std::string& text, bool add_bos) const {
  std::vector<int> tokens;
  if (add_bos) tokens.push_back(bos_id());
  if (text.empty()) return tokens;
  // The dummy prefix sentencepiece adds: the text is encoded as if it started with a space.
  auto piece_id = [this](std::string_view piece) -> std::optional<int> {
    auto it = ids_.find(std::string(piece));
    if (it == ids_.end()) return std::nullopt;
    return it->second;
  };
  auto byte_id = [this](unsigned char byte) {
    if (byte_ids_[byte] < 0) return 0;  // no byte piece: <unk>
    return byte_ids_[byte];
  };
  std::vector<int> symbols;
  if (auto space = piece_id(" ")) symbols.push_back(*space);
  for (int id : initial_symbols(text, piece_id, byte_id)) symbols.push_back(id);

  std::string joined;
  auto lookup = [&](int left, int right) -> std::optional<BpeMerge> {
    joined = pieces_[left].text;
    joined += pieces_[right].text;
    auto it = ids_.find(joined);
    if (it == ids_.end()) return std::nullopt;
    return BpeMerge{pieces_[it->second].score, it->second};
  };
  for (int id : bpe_merge(std::move(symbols), lookup)) tokens.push_back(id);
  return tokens;
}

std::string Llama2cTokenizer::decode(int previous, int token) const {
  if (token < 0 || token >= vocab_size()) fail("decode: token id {} is outside the vocabulary [0, {})", token, vocab_size());
  std::string_view piece = pieces_[token].text;
  // After <s> sentencepiece strips the dummy-prefix space.
  if (previous == bos_id() && !piece.empty() && piece[0] == ' ') piece.remove_prefix(1);
  if (auto byte = parse_byte_piece(piece)) return std::string(1, static_cast<char>(*byte));
  return std::string(piece);
}

std::string Llama2cTokenizer::serialize() const {
  std::string out;
  auto put = [&out](const void* data, size_t size) { out.append(static_cast<const char*>(data), size); };
  const int32_t max_length = std::max(1, max_token_length_);
  put(&max_length, 4);
  for (const TokenizerPiece& piece : pieces_) {
    const int32_t length = static_cast<int32_t>(piece.text.size());
    put(&piece.score, 4);
    put(&length, 4);
    put(piece.text.data(), piece.text.size());
  }
  return out;
}

void Llama2cTokenizer::write(const std::string& path) const { write_file_atomically(path, serialize()); }

}  // namespace fedcal
