// Text that tokenizer tests compare fedcal with transformers.js on (tests/oracles), beside TinyStories.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace fedcal::testing {

// Code, emoji (with ZWJ and skin tones), CJK, accents both composed and decomposed, digits of several
// scripts, long white-space runs, contractions in capitals, special tokens inline, and invalid UTF-8
// (stray continuation, truncated, overlong, surrogate, 0xFF).
std::string hard_text();

// Every byte that is not valid UTF-8 replaced by U+FFFD: what a JavaScript string can hold.
std::string with_replacement_characters(const std::string& text);

// The ids transformers.js gives `text` (valid UTF-8) with the tokenizer.json and tokenizer_config.json
// in `models` (tests/oracles/tokenize.mjs), through the files `scratch`.txt and `scratch`.ids.
std::vector<int> transformers_js_ids(const std::string& scratch, const std::string& models, const std::string& text);
// Where `a` and `b` first differ (the shorter length when one is the other's start).
size_t first_difference(const std::vector<int>& a, const std::vector<int>& b);

}  // namespace fedcal::testing
