// Random bytes from the operating system's CSPRNG and OpenSSL's error text: what the store (tokens),
// signing and secure aggregation all need from OpenSSL 3 besides their own algorithms.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fedcal {

using Key32 = std::array<uint8_t, 32>;
using Bytes = std::vector<uint8_t>;

// The oldest queued OpenSSL error as text (and the queue cleared), for error messages.
std::string openssl_error();

// Bytes from the operating system's CSPRNG (OpenSSL RAND_bytes); throws Error if it fails.
void random_bytes(std::span<uint8_t> out);
Key32 random_key();

}  // namespace fedcal
