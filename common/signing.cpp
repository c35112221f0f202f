#include "common/signing.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <sys/stat.h>

#include <cstdio>
#include <vector>

#include "common/error.h"
#include "common/hex.h"
#include "common/random.h"

namespace fedcal {
namespace {

struct FileCloser {
  void operator()(FILE* file) const { std::fclose(file); }
};
using File = std::unique_ptr<FILE, FileCloser>;

File open_file(const std::string& path, const char* mode) {
  File file(std::fopen(path.c_str(), mode));
  if (!file) fail("{}: cannot open", path);
  return file;
}

struct DigestContextDeleter {
  void operator()(EVP_MD_CTX* context) const { EVP_MD_CTX_free(context); }
};

}  // namespace

void SigningKey::KeyDeleter::operator()(evp_pkey_st* key) const { EVP_PKEY_free(key); }

SigningKey SigningKey::generate() {
  EVP_PKEY* key = EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519");
  if (key == nullptr) fail("Ed25519 key generation failed: {}", openssl_error());
  return SigningKey(key, true);
}

SigningKey SigningKey::read_private_key(const std::string& path) {
  File file = open_file(path, "rb");
  EVP_PKEY* key = PEM_read_PrivateKey(file.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) fail("{}: not a PEM private key: {}", path, openssl_error());
  SigningKey out(key, true);
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) fail("{}: the key is not an Ed25519 key", path);
  return out;
}

SigningKey SigningKey::read_public_key(const std::string& path) {
  File file = open_file(path, "rb");
  EVP_PKEY* key = PEM_read_PUBKEY(file.get(), nullptr, nullptr, nullptr);
  if (key == nullptr) fail("{}: not a PEM public key: {}", path, openssl_error());
  SigningKey out(key, false);
  if (EVP_PKEY_get_base_id(key) != EVP_PKEY_ED25519) fail("{}: the key is not an Ed25519 key", path);
  return out;
}

void SigningKey::write_private_key(const std::string& path) const {
  if (!has_private_) fail("{}: no private key to write", path);
  File file = open_file(path, "wb");
  ::chmod(path.c_str(), 0600);
  if (PEM_write_PrivateKey(file.get(), key_.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1) {
    fail("{}: cannot write the private key: {}", path, openssl_error());
  }
}

void SigningKey::write_public_key(const std::string& path) const {
  File file = open_file(path, "wb");
  if (PEM_write_PUBKEY(file.get(), key_.get()) != 1) fail("{}: cannot write the public key: {}", path, openssl_error());
}

Signature SigningKey::sign(std::span<const std::byte> message) const {
  if (!has_private_) fail("signing needs a private key");
  std::unique_ptr<EVP_MD_CTX, DigestContextDeleter> context(EVP_MD_CTX_new());
  Signature signature{};
  size_t length = signature.size();
  if (!context || EVP_DigestSignInit(context.get(), nullptr, nullptr, nullptr, key_.get()) != 1 ||
      EVP_DigestSign(context.get(), reinterpret_cast<unsigned char*>(signature.data()), &length,
                     reinterpret_cast<const unsigned char*>(message.data()), message.size()) != 1 ||
      length != signature.size()) {
    fail("Ed25519 signing failed: {}", openssl_error());
  }
  return signature;
}

bool SigningKey::verify(std::span<const std::byte> message, const Signature& signature) const {
  std::unique_ptr<EVP_MD_CTX, DigestContextDeleter> context(EVP_MD_CTX_new());
  if (!context || EVP_DigestVerifyInit(context.get(), nullptr, nullptr, nullptr, key_.get()) != 1) {
    fail("Ed25519 verification setup failed: {}", openssl_error());
  }
  const int result = EVP_DigestVerify(context.get(), reinterpret_cast<const unsigned char*>(signature.data()), signature.size(),
                                      reinterpret_cast<const unsigned char*>(message.data()), message.size());
  ERR_clear_error();
  return result == 1;
}

std::array<uint8_t, 32> SigningKey::public_key_bytes() const {
  std::array<uint8_t, 32> raw{};
  size_t length = raw.size();
  if (EVP_PKEY_get_raw_public_key(key_.get(), raw.data(), &length) != 1 || length != raw.size()) {
    fail("cannot read the raw public key: {}", openssl_error());
  }
  return raw;
}

std::string SigningKey::public_key_hex() const {
  const auto raw = public_key_bytes();
  return to_hex(std::as_bytes(std::span(raw)));
}

SigningKey SigningKey::from_public_bytes(std::span<const uint8_t> raw) {
  if (raw.size() != 32) fail("Ed25519 public key: {} bytes, expected 32", raw.size());
  EVP_PKEY* key = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, nullptr, raw.data(), raw.size());
  if (key == nullptr) fail("Ed25519 public key: {}", openssl_error());
  return SigningKey(key, false);
}

}  // namespace fedcal
