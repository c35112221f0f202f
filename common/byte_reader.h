// A bounds-checked little-endian cursor over untrusted bytes. Every read that would pass the end
// throws an Error naming the source and the offset, so parsers never read out of bounds.
#pragma once

#include <cstdint>
#include <cstring>
#include <span>
#include <string>
#include <type_traits>

#include "common/error.h"
#include "common/little_endian.h"

namespace fedcal {

class ByteReader {
 public:
  // `source` names the bytes in errors (usually a file path); the bytes must outlive the reader.
  ByteReader(std::span<const std::byte> bytes, std::string source) : bytes_(bytes), source_(std::move(source)) {}

  template <typename T>
  T read(const char* what) {
    static_assert(std::is_trivially_copyable_v<T>);
    T value;
    std::memcpy(&value, take(sizeof(T), what).data(), sizeof(T));
    return value;
  }

  // Returns the next `size` bytes and advances past them.
  std::span<const std::byte> take(size_t size, const char* what) {
    if (size > remaining()) {
      fail("{}: truncated at offset {}: {} needs {} bytes, only {} left", source_, offset_, what, size, remaining());
    }
    auto out = bytes_.subspan(offset_, size);
    offset_ += size;
    return out;
  }

  void skip(size_t size, const char* what) { take(size, what); }
  size_t offset() const { return offset_; }
  size_t remaining() const { return bytes_.size() - offset_; }
  const std::string& source() const { return source_; }

 private:
  std::span<const std::byte> bytes_;
  std::string source_;
  size_t offset_ = 0;
};

}  // namespace fedcal
