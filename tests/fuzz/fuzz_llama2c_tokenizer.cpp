// Fuzzes the llama2.c tokenizer.bin parser (the first byte picks the vocabulary size), then encodes
// and decodes with whatever it accepted.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "models/tokenizer/llama2c_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size < 1) return 0;
  const int vocab_size = 3 + data[0];
  try {
    const fedcal::Llama2cTokenizer tokenizer =
        fedcal::Llama2cTokenizer::parse({reinterpret_cast<const std::byte*>(data + 1), size - 1}, vocab_size, "tokenizer.bin");
    const std::vector<int> ids = tokenizer.encode("Once upon a time, \xe2\x80\x9cLily\xe2\x80\x9d saw 3 cats.\n\x80", true);
    tokenizer.decode_all(ids);
  } catch (const fedcal::Error&) {
  }
  return 0;
}
