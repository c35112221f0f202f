#include "secagg/crypto.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/kdf.h>

#include <bit>
#include <cstring>
#include <memory>

#include "common/error.h"

namespace fedcal {
namespace {

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

// OpenSSL 3 looks an algorithm up in its provider tables on every implicit use (aes_256_ctr()
// and friends), which costs more than encrypting a few KB. The fetched algorithms are immutable and
// thread-safe, so each is fetched once per process and kept for its lifetime.
const EVP_CIPHER* fetched_cipher(const char* name) {
  EVP_CIPHER* cipher = EVP_CIPHER_fetch(nullptr, name, nullptr);
  if (cipher == nullptr) fail("OpenSSL has no {}: {}", name, openssl_error());
  return cipher;
}
const EVP_CIPHER* aes_256_ctr() {
  static const EVP_CIPHER* const cipher = fetched_cipher("AES-256-CTR");
  return cipher;
}
const EVP_CIPHER* aes_256_gcm() {
  static const EVP_CIPHER* const cipher = fetched_cipher("AES-256-GCM");
  return cipher;
}

constexpr size_t kNonceBytes = 12;
constexpr size_t kTagBytes = 16;

}  // namespace

Key32 hkdf_sha256(std::span<const uint8_t> secret, std::string_view salt, std::span<const uint8_t> info) {
  static EVP_KDF* const kdf = [] {
    EVP_KDF* fetched = EVP_KDF_fetch(nullptr, "HKDF", nullptr);
    if (fetched == nullptr) fail("OpenSSL has no HKDF: {}", openssl_error());
    return fetched;
  }();
  std::unique_ptr<EVP_KDF_CTX, decltype(&EVP_KDF_CTX_free)> context(EVP_KDF_CTX_new(kdf), &EVP_KDF_CTX_free);
  char digest[] = "SHA256";
  const OSSL_PARAM params[] = {
      OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, digest, 0),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, const_cast<uint8_t*>(secret.data()), secret.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, const_cast<char*>(salt.data()), salt.size()),
      OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, const_cast<uint8_t*>(info.data()), info.size()),
      OSSL_PARAM_construct_end()};
  Key32 out;
  if (!context || EVP_KDF_derive(context.get(), out.data(), out.size(), params) != 1) fail("HKDF-SHA256: {}", openssl_error());
  return out;
}

X25519KeyPair X25519KeyPair::generate() { return from_private(random_key()); }

X25519KeyPair X25519KeyPair::from_private(const Key32& private_key) {
  EVP_PKEY* raw = EVP_PKEY_new_raw_private_key(EVP_PKEY_X25519, nullptr, private_key.data(), private_key.size());
  if (raw == nullptr) fail("X25519 private key: {}", openssl_error());
  X25519KeyPair pair;
  pair.key_ = std::shared_ptr<EVP_PKEY>(raw, EVP_PKEY_free);
  pair.private_ = private_key;
  size_t length = pair.public_.size();
  if (EVP_PKEY_get_raw_public_key(raw, pair.public_.data(), &length) != 1 || length != 32) {
    fail("X25519 public key: {}", openssl_error());
  }
  return pair;
}

Key32 X25519KeyPair::agree(const Key32& peer_public) const {
  Pkey peer(EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, nullptr, peer_public.data(), peer_public.size()));
  if (!peer) fail("X25519 key: {}", openssl_error());
  PkeyContext context(EVP_PKEY_CTX_new(key_.get(), nullptr));
  Key32 secret;
  size_t length = secret.size();
  // OpenSSL refuses (derive fails) when the result is all zeros, i.e. a low-order peer key.
  if (!context || EVP_PKEY_derive_init(context.get()) <= 0 || EVP_PKEY_derive_set_peer(context.get(), peer.get()) <= 0 ||
      EVP_PKEY_derive(context.get(), secret.data(), &length) <= 0 || length != secret.size()) {
    fail("X25519 key agreement failed (invalid peer public key?): {}", openssl_error());
  }
  return secret;
}

void check_x25519_public_key(const Key32& public_key, std::string_view what) {
  check_x25519_public_key(public_key, what, X25519KeyPair::generate());
}

void check_x25519_public_key(const Key32& public_key, std::string_view what, const X25519KeyPair& checker) {
  try {
    checker.agree(public_key);
  } catch (const Error&) {
    fail("{}: a low-order X25519 public key (every key agreement with it fails)", what);
  }
}

Bytes aes_gcm_seal(const Key32& key, std::span<const uint8_t> plaintext, std::span<const uint8_t> associated_data) {
  Bytes out(kNonceBytes + plaintext.size() + kTagBytes);
  random_bytes(std::span(out.data(), kNonceBytes));
  CipherContext context = new_cipher_context();
  int length = 0;
  if (EVP_EncryptInit_ex2(context.get(), aes_256_gcm(), key.data(), out.data(), nullptr) != 1 ||
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
      EVP_DecryptInit_ex2(context.get(), aes_256_gcm(), key.data(), sealed.data(), nullptr) == 1 &&
      EVP_DecryptUpdate(context.get(), nullptr, &length, associated_data.data(), static_cast<int>(associated_data.size())) == 1 &&
      EVP_DecryptUpdate(context.get(), out.data(), &length, sealed.data() + kNonceBytes, static_cast<int>(body)) == 1 &&
      EVP_CIPHER_CTX_ctrl(context.get(), EVP_CTRL_GCM_SET_TAG, kTagBytes, tag.data()) == 1 &&
      EVP_DecryptFinal_ex(context.get(), out.data() + length, &length) == 1;
  ERR_clear_error();
  if (ok) plaintext = std::move(out);
  return ok;
}

void apply_prg_mask(const Key32& seed, int sign, std::span<uint64_t> vector, unsigned lane_bits) {
  if (lane_bits != 32 && lane_bits != 64) fail("PRG mask: lanes of {} bits (32 or 64)", lane_bits);
  CipherContext context = new_cipher_context();
  const uint8_t iv[16] = {};
  if (EVP_EncryptInit_ex2(context.get(), aes_256_ctr(), seed.data(), iv, nullptr) != 1) {
    fail("AES-256-CTR: {}", openssl_error());
  }
  // Keystream words are little-endian on every host (so ARM and x86 agents agree); a 32-bit lane
  // takes 4 bytes of keystream, so narrow lanes halve the AES work.
  constexpr size_t kBlockWords = 8192;
  static constexpr uint8_t kZeros[kBlockWords * 8] = {};
  alignas(64) uint64_t stream64[kBlockWords];
  alignas(64) uint32_t stream32[kBlockWords];
  const size_t lane_bytes = lane_bits / 8;
  for (size_t start = 0; start < vector.size(); start += kBlockWords) {
    const size_t words = std::min(kBlockWords, vector.size() - start);
    auto* bytes = lane_bits == 64 ? reinterpret_cast<uint8_t*>(stream64) : reinterpret_cast<uint8_t*>(stream32);
    int length = 0;
    if (EVP_EncryptUpdate(context.get(), bytes, &length, kZeros, static_cast<int>(words * lane_bytes)) != 1) {
      fail("AES-256-CTR: {}", openssl_error());
    }
    uint64_t* out = vector.data() + start;
    if (lane_bits == 64) {
      if constexpr (std::endian::native == std::endian::big) {
        for (size_t i = 0; i < words; ++i) stream64[i] = __builtin_bswap64(stream64[i]);
      }
      if (sign > 0) {
        for (size_t i = 0; i < words; ++i) out[i] += stream64[i];
      } else {
        for (size_t i = 0; i < words; ++i) out[i] -= stream64[i];
      }
    } else {
      if constexpr (std::endian::native == std::endian::big) {
        for (size_t i = 0; i < words; ++i) stream32[i] = __builtin_bswap32(stream32[i]);
      }
      if (sign > 0) {
        for (size_t i = 0; i < words; ++i) out[i] = static_cast<uint32_t>(out[i] + stream32[i]);
      } else {
        for (size_t i = 0; i < words; ++i) out[i] = static_cast<uint32_t>(out[i] - stream32[i]);
      }
    }
  }
}

}  // namespace fedcal
