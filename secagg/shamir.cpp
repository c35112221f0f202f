#include "secagg/shamir.h"

#include <array>
#include <set>

#include "common/error.h"
#include "secagg/crypto.h"

namespace fedcal {
namespace {

// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, without secret-dependent branches.
uint8_t gf_mul(uint8_t a, uint8_t b) {
  uint8_t product = 0;
  for (int bit = 0; bit < 8; ++bit) {
    product ^= static_cast<uint8_t>(-(b & 1) & a);
    const uint8_t carry = static_cast<uint8_t>(-(a >> 7));
    a = static_cast<uint8_t>((a << 1) ^ (carry & 0x1b));
    b >>= 1;
  }
  return product;
}

// a^254 = a^-1 for a != 0.
uint8_t gf_inverse(uint8_t a) {
  uint8_t result = 1;
  uint8_t power = a;
  for (int exponent = 254; exponent > 0; exponent >>= 1) {
    if (exponent & 1) result = gf_mul(result, power);
    power = gf_mul(power, power);
  }
  return result;
}

}  // namespace

std::vector<ShamirShare> shamir_split(std::span<const uint8_t> secret, int threshold, std::span<const uint8_t> xs) {
  if (threshold < 1 || static_cast<size_t>(threshold) > xs.size()) {
    fail("Shamir: threshold {} with {} shares", threshold, xs.size());
  }
  std::set<uint8_t> seen;
  for (uint8_t x : xs) {
    if (x == 0 || !seen.insert(x).second) fail("Shamir: share points must be distinct and non-zero (got {})", x);
  }
  std::vector<ShamirShare> shares(xs.size());
  for (size_t i = 0; i < xs.size(); ++i) {
    shares[i].x = xs[i];
    shares[i].value.resize(secret.size());
  }
  std::vector<uint8_t> coefficients(static_cast<size_t>(threshold - 1));
  for (size_t byte = 0; byte < secret.size(); ++byte) {
    random_bytes(coefficients);
    for (ShamirShare& share : shares) {
      // Horner: c_{t-1} x^{t-1} + ... + c_1 x + secret.
      uint8_t value = 0;
      for (size_t c = coefficients.size(); c-- > 0;) value = gf_mul(value, share.x) ^ coefficients[c];
      share.value[byte] = gf_mul(value, share.x) ^ secret[byte];
    }
  }
  return shares;
}

std::vector<uint8_t> shamir_combine(std::span<const ShamirShare> shares, int threshold) {
  return shamir_interpolate(shares, threshold, 0);
}

std::vector<uint8_t> shamir_interpolate(std::span<const ShamirShare> shares, int threshold, uint8_t x) {
  if (threshold < 1 || shares.size() < static_cast<size_t>(threshold)) {
    fail("Shamir: {} shares, {} needed", shares.size(), threshold);
  }
  const auto used = shares.first(static_cast<size_t>(threshold));
  std::set<uint8_t> seen;
  for (const ShamirShare& share : used) {
    if (share.x == 0 || !seen.insert(share.x).second) fail("Shamir: duplicate or zero share point {}", share.x);
    if (share.value.size() != used[0].value.size()) fail("Shamir: shares of different lengths");
  }
  // Lagrange basis at x: l_i = prod_{j != i} (x - x_j) / (x_i - x_j); subtraction is XOR in GF(2^8).
  std::vector<uint8_t> basis(used.size());
  for (size_t i = 0; i < used.size(); ++i) {
    uint8_t numerator = 1, denominator = 1;
    for (size_t j = 0; j < used.size(); ++j) {
      if (j == i) continue;
      numerator = gf_mul(numerator, x ^ used[j].x);
      denominator = gf_mul(denominator, used[j].x ^ used[i].x);
    }
    basis[i] = gf_mul(numerator, gf_inverse(denominator));
  }
  std::vector<uint8_t> secret(used[0].value.size(), 0);
  for (size_t byte = 0; byte < secret.size(); ++byte) {
    for (size_t i = 0; i < used.size(); ++i) secret[byte] ^= gf_mul(basis[i], used[i].value[byte]);
  }
  return secret;
}

}  // namespace fedcal
