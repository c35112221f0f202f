#include "common/random.h"

#include <openssl/err.h>
#include <openssl/rand.h>

#include "common/error.h"

namespace fedcal {

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0) return "unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  ERR_clear_error();
  return buffer;
}

void random_bytes(std::span<uint8_t> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) fail("RAND_bytes: {}", openssl_error());
}

Key32 random_key() {
  Key32 key;
  random_bytes(key);
  return key;
}

}  // namespace fedcal
