// The tokenizer of a GGUF file, tokenizer.ggml.*, in llama.cpp's two main kinds:
//   "llama": sentencepiece pieces with scores and token types; fedcal reads and writes it as a
//            llama2.c tokenizer.bin (sentencepiece tokenizer.model and llama2.c tokenizers export to it);
//   "gpt2":  byte-level BPE: tokens in byte characters, ranked merges, token types, and the
//            pre-tokenizer by llama.cpp's name in tokenizer.ggml.pre ("llama-bpe", "qwen2", "gpt2",
//            "smollm"); fedcal reads it into a tokenizer.json and writes it from one.
// An unknown model, pre-tokenizer or layout is refused by name.
#pragma once

#include "models/format/gguf.h"
#include "models/format/model_package.h"

namespace fedcal {

// Sets tokenizer.ggml.* in `out` for a model with `vocab_size` embeddings (unused ids are padded).
void set_gguf_tokenizer(GgufWriter& out, const PackageTokenizer& tokenizer, int vocab_size);

// The tokenizer of `file`, checked against the model's `vocab_size` embeddings.
PackageTokenizer gguf_tokenizer(const GgufFile& file, int vocab_size);

}  // namespace fedcal
