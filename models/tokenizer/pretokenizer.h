// How byte-level BPE tokenizers cut text into words before merging: the split regexes of GPT-2
// (SmolLM2 and other GPT-2 style vocabularies), Llama 3 and Qwen2/Qwen3, matched by hand-written
// code with the regexes' exact leftmost-first semantics (Unicode classes from unicode.h), and the
// Digits pre-tokenizer. A regex that is not one of these is refused by the caller, not approximated.
#pragma once

#include <optional>
#include <string_view>
#include <vector>

namespace fedcal {

enum class SplitPattern {
  kGpt2,    // 's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
  kLlama3,  // (?i:'s|...)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+
  kQwen2,   // as Llama 3 with single digits: \p{N}
};

// The pattern a tokenizer.json "Split" regex spells, or nullopt for any other regex.
std::optional<SplitPattern> split_pattern_from_regex(std::string_view regex);
std::string_view split_pattern_regex(SplitPattern pattern);

// The words of `text` under `pattern`, in order; together they are exactly `text`.
std::vector<std::string_view> split_words(std::string_view text, SplitPattern pattern);
// The Digits pre-tokenizer: runs of number characters (\p{N}) apart from the rest, or with `individual`
// every number character on its own.
std::vector<std::string_view> split_digits(std::string_view text, bool individual);

}  // namespace fedcal
