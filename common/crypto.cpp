#include "common/crypto.h"

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#include <bit>
#include <cstring>
#include <memory>

#include "common/error.h"

namespace fedcal {
namespace {

std::string openssl_error() {
  const unsigned long code = ERR_get_error();
  if (code == 0) return "unknown OpenSSL error";
  char buffer[256];
  ERR_error_string_n(code, buffer, sizeof(buffer));
  ERR_clear_error();
  return buffer;
}

struct PkeyDeleter {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using Pkey = std::unique_ptr<EVP_PKEY, PkeyDeleter>;
struct PkeyContextDeleter {
  void operator()(EVP_PKEY_CTX* context) const { EVP_PKEY_CTX_free(context); }
};
using PkeyContext = std::unique_ptr<EVP_PKEY_CTX, PkeyContextDeleter>;
struct CipherContextDeleter {
  void operator()(EVP_CIPHER_CTX* context) const { EVP_CIPHER_CTX_free(context); }
};
using CipherContext = std::unique_ptr<EVP_CIPHER_CTX, CipherContextDeleter>;

CipherContext new_cipher_context() {
  CipherContext context(EVP_CIPHER_CTX_new());
  if (!context) fail("EVP_CIPHER_CTX_new: {}", openssl_error());
  return context;
}

constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

}  // namespace

void random_bytes(std::span<uint8_t> out) {
  if (RAND_bytes(out.data(), static_cast<int>(out.size())) != 1) fail("RAND_bytes: {}", openssl_error());
}

Key32 random_key() {
  Key32 key;
  random_bytes(key);
  return key;
}

Key32 hkdf_sha256(std::span<const uint8_t> secret, std::string_view salt, std::span<const uint8_t> info) {
  PkeyContext context(EVP_PKEY_CTX_new_id(EVP_PKEY_HKDF, nullptr));
  Key32 out;
  size_t out_len = out.size();
  if (!context || EVP_PKEY_derive_init(context.get()) <= 0 || EVP_PKEY_CTX_set_hkdf_md(context.get(), EVP_sha256()) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_salt(context.get(), reinterpret_cast<const unsigned char*>(salt.data()),
                                  static_cast<int>(salt.size())) <= 0 ||
      EVP_PKEY_CTX_set1_hkdf_key(context.get(), secret.data(), static_cast<int>(secret.size())) <= 0 ||
      EVP_PKEY_CTX_add1_hkdf_info(context.get(), info.data(), static_cast<int>(info.size())) <= 0 ||
      EVP_PKEY_derive(context.get(), out.data(), &out_len) <= 0 || out_len != out.size()) {
    fail("HKDF-SHA256: {}", openssl_error());
  }
  return out;
}

X25519KeyPair X25519KeyPair::generate() { return from_private(random_key()); }

X25519KeyPair X25519KeyPair::from_private(const Key32& private_key) {
  Pkey key(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size()));
  if (!key) fail("X25519 private key: {}", openssl_error());
  X25519KeyPair pair;
  pair.private_ = private_key;
  size_t length = pair.public_.size();
  if (EVP_PKEY_get_raw_public_key(key.get(), pair.public_.data(), &length) != 1 || length != 32) {
    fail("X25519 public key: {}", openssl_error());
  }
  return pair;
}

Key32 X25519KeyPair::agree(const Key32& peer_public) const {
  Pkey own(EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_.data(), private_.size()));
  Pkey peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(), peer_public.size()));
  if (!own || !peer) fail("X25519 key: {}", openssl_error());
  PkeyContext context(EVP_PKEY_CTX_new(own.get(), nullptr));
  Key32 secret;
  size_t length = secret.size();
  // OpenSSL refuses (derive fails) when the result is all zeros, i.e. a low-order peer key.
  if (!context || EVP_PKEY_derive_init(context.get()) <= 0 || EVP_PKEY_derive_set_peer(context.get(), peer.get()) <= 0 ||
      EVP_PKEY_derive(context.get(), secret.data(), &length) <= 0 || length != secret.size()) {
    fail("X25519 key agreement failed (invalid peer public key?): {}", openssl_error());
  }
  return secret;
}

Bytes aes_gcm_seal(const Key32& key, std::span<const uint8_t> plaintext, std::span<const uint8_t> associated_data) {
  Bytes out(kNonceBytes + plaintext.size() + kTagBytes);
  random_bytes(std::span(out.data(), kNonceBytes));
  CipherContext context = new_cipher_context();
  int length = 0;
  if (EVP_EncryptInit_ex2(context.get(), EVP_aes_256_gcm(), key.data(), out.data(), nullptr) != 1 ||
      EVP_EncryptUpdate(context.get(), nullptr, &length, associated_data.data(), static_cast<int>(associated_data.size())) != 1 ||
      EVP_EncryptUpdate(context.get(), out.data() + kNonceBytes, &length, plaintext.data(), static_cast<int>(plaintext.size())) !=
          1 ||
      EVP_EncryptFinal_ex(context.get(), out.data() + kNonceBytes + length, &length) != 1 ||
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_GET_TAG, kTagBytes, out.data() + out.size() - kTagBytes) != 1) {
    fail("AES-256-GCM encryption: {}", openssl_error());
  }
  return out;
}

bool aes_gcm_open(const Key32& key, std::span<const uint8_t> sealed, std::span<const uint8_t> associated_data, Bytes& plaintext) {
  plaintext.clear();
  if (sealed.size() < kNonceBytes + kTagBytes) return false;
  const size_t body = sealed.size() - kNonceBytes - kTagBytes;
  Bytes out(body);
  Bytes tag(sealed.end() - kTagBytes, sealed.end());
  CipherContext context = new_cipher_context();
  int length = 0;
  const bool ok =
      EVP_DecryptInit_ex2(context.get(), EVP_aes_256_gcm(), key.data(), sealed.data(), nullptr) == 1 &&
      EVP_DecryptUpdate(context.get(), nullptr, &length, associated_data.data(), static_cast<int>(associated_data.size())) == 1 &&
      EVP_DecryptUpdate(context.get(), out.data(), &length, sealed.data() + kNonceBytes, static_cast<int>(body)) == 1 &&
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) == 1 &&
      EVP_DecryptFinal_ex(context.get(), out.data() + length, &length) == 1;
  ERR_clear_error();
  if (ok) plaintext = std::move(out);
  return ok;
}

void apply_prg_mask(const Key32& seed, int sign, std::span<uint64_t> vector) {
  CipherContext context = new_cipher_context();
  const uint8_t iv[16] = {};
  if (EVP_EncryptInit_ex2(context.get(), EVP_aes_256_ctr(), seed.data(), iv, nullptr) != 1) {
    fail("AES-256-CTR: {}", openssl_error());
  }
  // Keystream words are little-endian uint64 on every host (so ARM and x86 agents agree).
  constexpr size_t kBlockWords = 8192;
  static constexpr uint8_t kZeros[kBlockWords * 8] = {};
  alignas(64) uint64_t stream[kBlockWords];
  for (size_t start = 0; start < vector.size(); start += kBlockWords) {
    const size_t words = std::min(kBlockWords, vector.size() - start);
    int length = 0;
    if (EVP_EncryptUpdate(context.get(), reinterpret_cast<uint8_t*>(stream), &length, kZeros, static_cast<int>(words * 8)) != 1) {
      fail("AES-256-CTR: {}", openssl_error());
    }
    if constexpr (std::endian::native == std::endian::big) {
      for (size_t i = 0; i < words; ++i) stream[i] = __builtin_bswap64(stream[i]);
    }
    uint64_t* out = vector.data() + start;
    if (sign > 0) {
      for (size_t i = 0; i < words; ++i) out[i] += stream[i];
    } else {
      for (size_t i = 0; i < words; ++i) out[i] -= stream[i];
    }
  }
}

}  // namespace fedcal
