#include "secagg/shamir.h"

#include <array>
#include <cstring>
#include <set>

#include "common/error.h"
#include "secagg/crypto.h"

namespace fedcal {
namespace {

// Multiplication in GF(2^8) modulo x^8 + x^4 + x^3 + x + 1, without secret-dependent branches.
constexpr uint8_t gf_mul(uint8_t a, uint8_t b) {
  uint8_t product = 0;
  for (int bit = 0; bit < 8; ++bit) {
    product ^= static_cast<uint8_t>(-(b & 1) & a);
    const uint8_t carry = static_cast<uint8_t>(-(a >> 7));
    a = static_cast<uint8_t>((a << 1) ^ (carry & 0x1b));
    b >>= 1;
  }
  return product;
}

// Log and exp tables of GF(2^8) (generator 3), for arithmetic on public values only (share points
// and Lagrange coefficients): a table lookup indexed by a secret would leak it through the cache.
struct GfTables {
  std::array<uint8_t, 512> exp{};
  std::array<uint8_t, 256> log{};
  constexpr GfTables() {
    uint8_t value = 1;
    for (int i = 0; i < 255; ++i) {
      exp[static_cast<size_t>(i)] = exp[static_cast<size_t>(i) + 255] = value;
      log[value] = static_cast<uint8_t>(i);
      value = gf_mul(value, 3);
    }
  }
  constexpr uint8_t mul(uint8_t a, uint8_t b) const { return a == 0 || b == 0 ? 0 : exp[size_t{log[a]} + log[b]]; }
  constexpr uint8_t inverse(uint8_t a) const { return exp[255 - size_t{log[a]}]; }  // a != 0
};
constexpr GfTables kTables;

// acc ^= c * value, byte by byte, for a public c and secret bytes: c * v is the XOR of c * 2^k over
// the set bits k of v, done on 8 bytes at once with masks (no secret-dependent branch or lookup).
void mul_add_public(uint8_t c, std::span<const uint8_t> value, std::span<uint8_t> acc) {
  constexpr uint64_t kLowBits = 0x0101010101010101ull;
  uint64_t multiples[8];  // c * 2^k in every byte
  uint8_t multiple = c;
  for (int k = 0; k < 8; ++k) {
    multiples[k] = kLowBits * multiple;
    multiple = gf_mul(multiple, 2);
  }
  size_t at = 0;
  for (; at + 8 <= value.size(); at += 8) {
    uint64_t word = 0, product = 0;
    std::memcpy(&word, value.data() + at, 8);
    for (int k = 0; k < 8; ++k) product ^= (((word >> k) & kLowBits) * 0xff) & multiples[k];
    uint64_t sum = 0;
    std::memcpy(&sum, acc.data() + at, 8);
    sum ^= product;
    std::memcpy(acc.data() + at, &sum, 8);
  }
  for (; at < value.size(); ++at) acc[at] ^= gf_mul(c, value[at]);
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
  return shamir_interpolate(shares, threshold, std::span<const uint8_t>(&x, 1)).front();
}

std::vector<std::vector<uint8_t>> shamir_interpolate(std::span<const ShamirShare> shares, int threshold,
                                                     std::span<const uint8_t> xs) {
  if (threshold < 1 || shares.size() < static_cast<size_t>(threshold)) {
    fail("Shamir: {} shares, {} needed", shares.size(), threshold);
  }
  const auto used = shares.first(static_cast<size_t>(threshold));
  std::array<bool, 256> seen{};
  for (const ShamirShare& share : used) {
    if (share.x == 0 || seen[share.x]) fail("Shamir: duplicate or zero share point {}", share.x);
    seen[share.x] = true;
    if (share.value.size() != used[0].value.size()) fail("Shamir: shares of different lengths");
  }
  // Lagrange basis at x: l_i(x) = prod_{j != i} (x - x_j) / (x_i - x_j) = L(x) w_i / (x - x_i) with
  // L(x) = prod_j (x - x_j) and w_i = 1 / prod_{j != i} (x_i - x_j); subtraction is XOR in GF(2^8).
  // The points are public, so the basis may use the tables; the share values are secret and are only
  // multiplied by mul_add_public (no secret-dependent branch or memory access).
  std::vector<uint8_t> weights(used.size());
  for (size_t i = 0; i < used.size(); ++i) {
    uint8_t denominator = 1;
    for (size_t j = 0; j < used.size(); ++j) {
      if (j != i) denominator = kTables.mul(denominator, used[j].x ^ used[i].x);
    }
    weights[i] = kTables.inverse(denominator);
  }
  std::vector<std::vector<uint8_t>> values;
  std::vector<uint8_t> basis(used.size());
  for (const uint8_t x : xs) {
    std::vector<uint8_t> value(used[0].value.size(), 0);
    if (seen[x]) {  // x is one of the shares' points: its value
      for (const ShamirShare& share : used) {
        if (share.x == x) value = share.value;
      }
      values.push_back(std::move(value));
      continue;
    }
    uint8_t whole = 1;  // L(x)
    for (const ShamirShare& share : used) whole = kTables.mul(whole, x ^ share.x);
    for (size_t i = 0; i < used.size(); ++i)
      basis[i] = kTables.mul(kTables.mul(whole, weights[i]), kTables.inverse(x ^ used[i].x));
    for (size_t i = 0; i < used.size(); ++i) mul_add_public(basis[i], used[i].value, value);
    values.push_back(std::move(value));
  }
  return values;
}

}  // namespace fedcal
