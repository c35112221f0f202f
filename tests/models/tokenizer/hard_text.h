// Text that tokenizer tests compare fedcal with transformers.js on (tests/oracles), beside TinyStories.
#pragma once

#include <string>

namespace fedcal::testing {

// Code, emoji (with ZWJ and skin tones), CJK, accents both composed and decomposed, digits of several
// scripts, long white-space runs, contractions in capitals, special tokens inline, and invalid UTF-8
// (stray continuation, truncated, overlong, surrogate, 0xFF).
std::string hard_text();

// Every byte that is not valid UTF-8 replaced by U+FFFD: what a JavaScript string can hold.
std::string with_replacement_characters(const std::string& text);

}  // namespace fedcal::testing
