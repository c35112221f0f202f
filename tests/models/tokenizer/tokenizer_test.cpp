// Tokenizers: llama2.c's merge-by-score, sentencepiece, and tokenizer.json BPE agree on real text.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include "models/tokenizer/bpe.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"
#include "tests/models/tokenizer/tokenizer_fixtures.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

Llama2cTokenizer small_llama2c_tokenizer() {
  // <unk>, <s>, </s>, bytes 0x00-0xFF, then pieces; a higher score merges first.
  std::vector<TokenizerPiece> pieces{{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  for (int b = 0; b < 256; ++b) pieces.push_back({fmt::format("<0x{:02X}>", b), 0});
  for (const char* piece : {" ", "a", "b", "c", "ab", " ab", "bc", " c", "é"}) pieces.push_back({piece, 0});
  // Scores: "ab" beats "bc", " ab" comes after "ab".
  auto score = [&](const std::string& piece, float value) {
    for (auto& p : pieces) {
      if (p.text == piece) p.score = value;
    }
  };
  score("ab", -1);
  score(" ab", -2);
  score("bc", -3);
  score(" c", -4);
  return Llama2cTokenizer(std::move(pieces));
}

int id_of(const Llama2cTokenizer& tokenizer, const std::string& piece) {
  for (int i = 0; i < tokenizer.vocab_size(); ++i) {
    if (tokenizer.pieces()[i].text == piece) return i;
  }
  FAIL("no piece " << piece);
  return -1;
}

TEST_CASE("llama2.c tokenizer: dummy prefix, merges by score, byte fallback, decoding") {
  const Llama2cTokenizer tokenizer = small_llama2c_tokenizer();
  // " abc": " " a b c -> merge "ab" (best) -> " ab" -> " ab" c; "bc" never forms because "ab" took b first.
  CHECK(tokenizer.encode("abc", true) == std::vector<int>{1, id_of(tokenizer, " ab"), id_of(tokenizer, "c")});
  // "c c": " c" merges twice.
  CHECK(tokenizer.encode("c c", false) == std::vector<int>{id_of(tokenizer, " c"), id_of(tokenizer, " c")});
  // "z" is not a piece: byte fallback; "é" is one piece.
  CHECK(tokenizer.encode("zé", false) == std::vector<int>{id_of(tokenizer, " "), 3 + 'z', id_of(tokenizer, "é")});
  // A mis-encoded lone continuation byte falls back to its byte.
  CHECK(tokenizer.encode("\x80", false) == std::vector<int>{id_of(tokenizer, " "), 3 + 0x80});
  CHECK(tokenizer.encode("", true) == std::vector<int>{1});
  CHECK(tokenizer.decode_all(tokenizer.encode("abc c zé\n", true)) == "abc c zé\n");
  CHECK(tokenizer.decode(1, id_of(tokenizer, " ab")) == "ab");  // leading space dropped after <s>
  CHECK(tokenizer.decode(5, id_of(tokenizer, " ab")) == " ab");
}

TEST_CASE("UTF-8 characters take the continuation bytes their lead announces, stray and truncated bytes stand alone") {
  using Parts = std::vector<std::string_view>;
  // U+2581 then a stray continuation byte: the character stays whole (it was four bytes of fallback).
  CHECK(split_utf8("\xe2\x96\x81\x80"
                   "a") == Parts{"\xe2\x96\x81", "\x80", "a"});
  CHECK(split_utf8("\xc3\xa9\xa9\xf0\x9f\x98\x80") == Parts{"\xc3\xa9", "\xa9", "\xf0\x9f\x98\x80"});
  CHECK(split_utf8("\xe2\x82 c\xff") == Parts{"\xe2\x82", " ", "c", "\xff"});  // truncated, then 0xFF
}

TEST_CASE("tokenizer.json BPE: ranked merges, Metaspace split, byte fallback") {
  std::string vocab = R"({"<unk>": 0, "<s>": 1, "</s>": 2)";
  for (int b = 0; b < 256; ++b) vocab += fmt::format(R"(, "<0x{:02X}>": {})", b, 3 + b);
  vocab += R"(, "▁": 259, "a": 260, "b": 261, "▁a": 262, "ab": 263, "▁ab": 264})";
  const std::string json_text = R"({"model": {"type": "BPE", "byte_fallback": true, "unk_token": "<unk>", "vocab": )" + vocab +
                                R"(, "merges": ["a b", "▁ a", ["▁", "ab"]]}, "pre_tokenizer": {"type": "Metaspace",
                                "replacement": "▁", "prepend_scheme": "first", "split": true}})";
  const std::unique_ptr<Tokenizer> tokenizer = parse_hf_tokenizer(json_text, "test.json");
  // "ab ab!": words "▁ab", "▁ab!" -> "ab" first (rank 0), then "▁ab" (rank 2); "!" falls back to <0x21>.
  CHECK(tokenizer->encode("ab ab!", true) == std::vector<int>{1, 264, 264, 3 + '!'});
  CHECK(tokenizer->encode("a", false) == std::vector<int>{262});
  CHECK(tokenizer->decode_all(tokenizer->encode("ab ab!", true)) == "ab ab!");
  CHECK(tokenizer->bos_id() == 1);
  CHECK(tokenizer->eos_id() == 2);
}

TEST_CASE("sentencepiece, its llama2.c export and its tokenizer.json export tokenize TinyStories identically" *
          doctest::timeout(120)) {
  testing::ScratchDir dir;
  const std::string model_path = testing::train_sentencepiece(dir.root(), testing::tinystories_train().substr(0, 200000), 512);
  const SentencePieceTokenizer sentencepiece(model_path);
  const Llama2cTokenizer llama2c = testing::llama2c_tokenizer_from_sentencepiece(model_path);
  const std::unique_ptr<Tokenizer> hf = parse_hf_tokenizer(testing::hf_tokenizer_json_from_sentencepiece(model_path), "exported.json");
  REQUIRE(sentencepiece.vocab_size() == 512);
  REQUIRE(llama2c.vocab_size() == 512);
  REQUIRE(hf->vocab_size() == 512);

  // The whole held-out split (with its mis-encoded bytes) as one text.
  const std::string heldout = testing::tinystories_heldout();
  const std::vector<int> expected = sentencepiece.encode(heldout, true);
  CHECK(expected.size() > heldout.size() / 8);
  CHECK(llama2c.encode(heldout, true) == expected);
  CHECK(hf->encode(heldout, true) == expected);

  // Lossless: byte fallback covers every byte, whitespace is kept.
  CHECK(llama2c.decode_all(expected) == heldout);
  CHECK(hf->decode_all(expected) == heldout);
  CHECK(sentencepiece.decode_all(expected) == heldout);

  // The llama2.c export survives a write/read round trip.
  llama2c.write(dir.path("tokenizer.bin"));
  const Llama2cTokenizer reread = Llama2cTokenizer::read(dir.path("tokenizer.bin"), 512);
  CHECK(reread.encode(heldout.substr(0, 5000), true) == sentencepiece.encode(heldout.substr(0, 5000), true));
}

}  // namespace
}  // namespace fedcal
