// Fuzzes the safetensors header parser; every entry it accepts must lie inside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "models/format/safetensors.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fedcal::SafetensorsIndex index =
        fedcal::parse_safetensors({reinterpret_cast<const std::byte*>(data), size}, "fuzz.safetensors");
    for (const auto& [name, entry] : index.tensors) {
      if (index.data_offset + entry.end > size || entry.begin > entry.end) std::abort();
    }
  } catch (const fedcal::Error&) {
  }
  return 0;
}
