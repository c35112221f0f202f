// Fuzzes the config.json parser of Hugging Face checkpoints.
#include <cstddef>
#include <cstdint>
#include <string>

#include "common/error.h"
#include "models/format/hf_checkpoint.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    fedcal::parse_hf_config(std::string(reinterpret_cast<const char*>(data), size), "config.json");
  } catch (const fedcal::Error&) {
  }
  return 0;
}
