// Fuzzes the llama2.c checkpoint parser (legacy and version 1).
#include <cstddef>
#include <cstdint>

#include "common/error.h"
#include "models/format/llama2c_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    fedcal::Model model = fedcal::parse_llama2c_checkpoint({reinterpret_cast<const std::byte*>(data), size}, "fuzz.bin");
    model.config.validate();
  } catch (const fedcal::Error&) {
  }
  return 0;
}
