// SHA-256 digests (OpenSSL EVP), as lowercase hex.
#pragma once

#include <array>
#include <cstddef>
#include <memory>
#include <span>
#include <string>

struct evp_md_ctx_st;

namespace fedcal {

using Sha256Digest = std::array<std::byte, 32>;

// Incremental SHA-256.
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;
  void update(const void* data, size_t size);
  // The digest; the object is finished afterwards.
  Sha256Digest digest();
  std::string hex();  // digest() as lowercase hex

 private:
  struct ContextDeleter {
    void operator()(evp_md_ctx_st* context) const;
  };
  std::unique_ptr<evp_md_ctx_st, ContextDeleter> context_;
};

std::string sha256_hex(std::span<const std::byte> data);
// Hashes a file (streamed); throws Error naming the file on I/O failure.
std::string sha256_file_hex(const std::string& path);

}  // namespace fedcal
