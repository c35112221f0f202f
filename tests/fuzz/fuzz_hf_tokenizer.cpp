// Fuzzes the tokenizer.json parser (sentencepiece-style and byte-level), then encodes and decodes with whatever it accepted.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "models/tokenizer/hf_tokenizer.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const std::unique_ptr<fedcal::Tokenizer> tokenizer =
        fedcal::parse_hf_tokenizer(std::string(reinterpret_cast<const char*>(data), size), "tokenizer.json");
    const std::vector<int> ids = tokenizer->encode("Once upon a time, \xe2\x80\x9cLily\xe2\x80\x9d saw 3 cats.\n\x80", true);
    tokenizer->decode_all(ids);
  } catch (const fedcal::Error&) {
  }
  return 0;
}
