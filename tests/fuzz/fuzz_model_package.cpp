// Fuzzes the model package reader. The input's trailer digest is recomputed first, so mutations reach
// the manifest and tensor-table checks instead of stopping at the hash comparison.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "common/error.h"
#include "common/sha256.h"
#include "models/format/model_package.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  std::vector<std::byte> bytes(reinterpret_cast<const std::byte*>(data), reinterpret_cast<const std::byte*>(data) + size);
  if (bytes.size() >= 16 + 128) {
    const size_t content = bytes.size() - 128;
    std::memcpy(bytes.data() + content, "FCSIG001", 8);
    fedcal::Sha256 sha;
    sha.update(bytes.data(), content);
    const fedcal::Sha256Digest digest = sha.digest();
    std::memcpy(bytes.data() + content + 8, digest.data(), digest.size());
  }
  try {
    fedcal::parse_model_package(bytes, "fuzz.pkg", nullptr);
  } catch (const fedcal::Error&) {
  }
  return 0;
}
