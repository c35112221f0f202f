// Ed25519 signatures (OpenSSL 3 EVP) for model packages: key generation, PEM key files, sign, verify.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>

struct evp_pkey_st;

namespace fedcal {

using Signature = std::array<std::byte, 64>;

class SigningKey {
 public:
  static SigningKey generate();
  // Reads a PEM private key (PKCS#8) written by write_private_key; throws Error naming the file.
  static SigningKey read_private_key(const std::string& path);
  // Reads a PEM public key written by write_public_key.
  static SigningKey read_public_key(const std::string& path);

  // A public key from its raw 32 bytes (as sent in the protocol); throws Error if malformed.
  static SigningKey from_public_bytes(std::span<const uint8_t> raw);

  void write_private_key(const std::string& path) const;  // file mode 0600
  void write_public_key(const std::string& path) const;
  bool has_private_key() const { return has_private_; }

  Signature sign(std::span<const std::byte> message) const;
  bool verify(std::span<const std::byte> message, const Signature& signature) const;
  // The raw 32-byte public key, hex.
  std::string public_key_hex() const;
  std::array<uint8_t, 32> public_key_bytes() const;

 private:
  struct KeyDeleter {
    void operator()(evp_pkey_st* key) const;
  };
  SigningKey(evp_pkey_st* key, bool has_private) : key_(key), has_private_(has_private) {}
  std::unique_ptr<evp_pkey_st, KeyDeleter> key_;
  bool has_private_;
};

}  // namespace fedcal
