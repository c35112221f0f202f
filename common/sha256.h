// SHA-256 digests (OpenSSL EVP), as lowercase hex.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace fedcal {

std::string sha256_hex(std::span<const std::byte> data);
// Hashes a file (streamed); throws Error naming the file on I/O failure.
std::string sha256_file_hex(const std::string& path);

}  // namespace fedcal
