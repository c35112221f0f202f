// A read-only memory mapping of a whole file.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace fedcal {

class MappedFile {
 public:
  // Maps `path` read-only; throws Error naming the file if it cannot be opened or mapped.
  explicit MappedFile(std::string path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  std::span<const std::byte> bytes() const { return {static_cast<const std::byte*>(data_), size_}; }
  size_t size() const { return size_; }
  const std::string& path() const { return path_; }
  // Drops the pages wholly inside `range` (a part of bytes()) from this process's memory: a reader
  // that has copied a tensor out calls it, so reading a file of N bytes does not add N bytes to the
  // resident set. Reading the range again faults the pages back in from the file.
  void release(std::span<const std::byte> range) const;

 private:
  std::string path_;
  void* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace fedcal
