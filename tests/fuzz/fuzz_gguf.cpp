// Fuzzes the GGUF reader and the model built from it; every tensor it accepts must lie inside the input.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "models/format/gguf_model.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::span<const std::byte> bytes{reinterpret_cast<const std::byte*>(data), size};
  try {
    const fedcal::GgufFile file = fedcal::parse_gguf(bytes, "fuzz.gguf");
    for (const fedcal::GgufTensorInfo& tensor : file.tensors) {
      const auto span = file.tensor_bytes(tensor);
      if (span.data() < bytes.data() || span.data() + span.size() > bytes.data() + bytes.size()) std::abort();
    }
    fedcal::model_from_gguf(file);
  } catch (const fedcal::Error&) {
  }
  return 0;
}
