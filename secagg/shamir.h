// Shamir t-of-n secret sharing of byte strings, byte by byte over GF(2^8) (the AES field): any t shares
// give the secret back, t - 1 shares say nothing about it. Share x coordinates are 1..255.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace fedcal {

struct ShamirShare {
  uint8_t x = 0;               // evaluation point, 1..255
  std::vector<uint8_t> value;  // one byte per secret byte
};

// Shares of `secret` at the points `xs` (distinct, non-zero) with threshold `threshold` (1..xs.size()),
// from fresh random polynomials. Throws Error on bad arguments.
std::vector<ShamirShare> shamir_split(std::span<const uint8_t> secret, int threshold, std::span<const uint8_t> xs);

// The secret from `threshold` or more shares (Lagrange interpolation at 0). Throws Error if the shares
// are fewer than `threshold`, have duplicate or zero x, or differ in length.
std::vector<uint8_t> shamir_combine(std::span<const ShamirShare> shares, int threshold);
// The value at `x` of the polynomial through the first `threshold` shares (x = 0: the secret); what
// another share at `x` must hold if it was dealt from the same polynomial. Same checks as above.
std::vector<uint8_t> shamir_interpolate(std::span<const ShamirShare> shares, int threshold, uint8_t x);
// The same at each of `xs` (the Lagrange weights computed once: O(t) per point instead of O(t^2)).
std::vector<std::vector<uint8_t>> shamir_interpolate(std::span<const ShamirShare> shares, int threshold,
                                                     std::span<const uint8_t> xs);

}  // namespace fedcal
