// Real tokenizers for tests: a sentencepiece BPE model trained on the TinyStories training split,
// and its exports to llama2.c's tokenizer.bin and to a Hugging Face tokenizer.json.
#pragma once

#include <string>

#include "models/tokenizer/llama2c_tokenizer.h"

namespace fedcal::testing {

// Trains a byte-fallback BPE sentencepiece model with `vocab_size` pieces on `text`; returns the
// .model path inside `folder`. Options match models/train (identity normalization, whitespace kept).
std::string train_sentencepiece(const std::string& folder, const std::string& text, int vocab_size);

// The llama2.c export of a sentencepiece model (as llama2.c's tokenizer.py writes it).
Llama2cTokenizer llama2c_tokenizer_from_sentencepiece(const std::string& model_path);

// A tokenizer.json for a sentencepiece BPE model: merges ranked by the score of the merged piece,
// as Hugging Face's Llama converter derives them.
std::string hf_tokenizer_json_from_sentencepiece(const std::string& model_path);

}  // namespace fedcal::testing
