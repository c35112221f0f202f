#include "common/sha256.h"

#include <openssl/evp.h>

#include <array>
#include <fstream>
#include <memory>

#include "common/error.h"
#include "common/hex.h"

namespace fedcal {
void Sha256::ContextDeleter::operator()(evp_md_ctx_st* context) const { EVP_MD_CTX_free(context); }

Sha256::Sha256() : context_(EVP_MD_CTX_new()) {
  if (!context_ || EVP_DigestInit_ex(context_.get(), EVP_sha256(), nullptr) != 1)
    fail("SHA-256: cannot initialise OpenSSL digest");
}

Sha256::~Sha256() = default;

void Sha256::update(const void* data, size_t size) {
  if (EVP_DigestUpdate(context_.get(), data, size) != 1) fail("SHA-256: digest update failed");
}

Sha256Digest Sha256::digest() {
  Sha256Digest out{};
  unsigned int length = 0;
  if (EVP_DigestFinal_ex(context_.get(), reinterpret_cast<unsigned char*>(out.data()), &length) != 1 || length != out.size()) {
    fail("SHA-256: digest final failed");
  }
  return out;
}

std::string Sha256::hex() { return to_hex(digest()); }

std::string sha256_hex(std::span<const std::byte> data) {
  Sha256 sha;
  sha.update(data.data(), data.size());
  return sha.hex();
}

std::string sha256_file_hex(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open for hashing", path);
  Sha256 sha;
  std::array<char, 1 << 16> buffer{};
  while (in) {
    in.read(buffer.data(), buffer.size());
    sha.update(buffer.data(), static_cast<size_t>(in.gcount()));
  }
  if (in.bad()) fail("{}: read error while hashing", path);
  return sha.hex();
}

}  // namespace fedcal
