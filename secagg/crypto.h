// The cryptographic building blocks of secure aggregation, on OpenSSL 3 EVP: X25519 key
// agreement, HKDF-SHA256, AES-256-GCM for shares in transit and an AES-256-CTR pseudorandom generator
// that expands a 256-bit seed into a mask of uint64 words.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "common/random.h"

struct evp_pkey_st;

namespace fedcal {

// HKDF-SHA256 (RFC 5869) of `secret` with `info`, 32 bytes out.
Key32 hkdf_sha256(std::span<const uint8_t> secret, std::string_view salt, std::span<const uint8_t> info);

// An X25519 key pair. The private key is exportable because secure aggregation secret-shares it.
class X25519KeyPair {
 public:
  static X25519KeyPair generate();
  static X25519KeyPair from_private(const Key32& private_key);
  const Key32& public_key() const { return public_; }
  const Key32& private_key() const { return private_; }
  // The raw shared secret with `peer_public`; throws Error for a low-order (all-zero result) peer key.
  Key32 agree(const Key32& peer_public) const;

 private:
  Key32 private_{};
  Key32 public_{};
  std::shared_ptr<evp_pkey_st> key_;  // the OpenSSL key, made once (making one costs more than using it)
};

// Throws Error (naming `what`) unless `public_key` is a usable X25519 key: a low-order point (the
// all-zero key among them) makes every key agreement with it yield zero, so a participant that
// advertises one would make each honest neighbour's agreement fail. Checked by one agreement with a
// fresh key pair: for every clamped private key, exactly the low-order points give zero.
void check_x25519_public_key(const Key32& public_key, std::string_view what);
// The same with `checker`, a key pair of the caller's: the property holds for every private key, so
// one pair made once serves every check (a coordinator checks two keys per joining agent).
void check_x25519_public_key(const Key32& public_key, std::string_view what, const X25519KeyPair& checker);

// AES-256-GCM with a random 12-byte nonce: output = nonce || ciphertext || 16-byte tag.
Bytes aes_gcm_seal(const Key32& key, std::span<const uint8_t> plaintext, std::span<const uint8_t> associated_data);
// Returns false (and leaves `plaintext` empty) if the ciphertext is malformed or not authentic.
[[nodiscard]] bool aes_gcm_open(const Key32& key, std::span<const uint8_t> sealed, std::span<const uint8_t> associated_data,
                                Bytes& plaintext);

// Adds (sign +1) or subtracts (sign -1) the AES-256-CTR keystream of `seed` (zero IV), read as
// little-endian words of `lane_bits` (64 or 32), to `vector`, modulo 2^lane_bits: with 32-bit lanes
// every result is reduced below 2^32 (the vector keeps its uint64 storage).
void apply_prg_mask(const Key32& seed, int sign, std::span<uint64_t> vector, unsigned lane_bits = 64);

}  // namespace fedcal
