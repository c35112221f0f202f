// Whole-file reads and writes with errors that name the file.
#pragma once

#include <cstddef>
#include <span>
#include <string>

namespace fedcal {

std::string read_text_file(const std::string& path);
// The same for a file that must hold UTF-8 text (calibration or evaluation text): anything else (a
// binary file, another encoding) is refused, naming the file, the byte and its offset.
std::string read_utf8_text_file(const std::string& path);
// Writes to `path + ".tmp"` and renames over `path`, so readers never see a half-written file.
// Writes all of `data` to an open file descriptor, retrying short writes; throws Error naming `path`
// (e.g. "disk full") on failure.
void write_all(int fd, std::span<const std::byte> data, const std::string& path);

// A file written under `path + ".tmp"` and, by commit(), synced, renamed over `path` and its folder
// synced: readers never see a half-written file, and a committed file survives a power loss.
// Destroyed without commit() (an error on the way), it removes the temporary file.
class AtomicFileWriter {
 public:
  explicit AtomicFileWriter(std::string path, unsigned mode = 0644);
  ~AtomicFileWriter();
  AtomicFileWriter(const AtomicFileWriter&) = delete;
  AtomicFileWriter& operator=(const AtomicFileWriter&) = delete;

  void write(std::span<const std::byte> data);
  void write(const void* data, size_t size) { write(std::span(static_cast<const std::byte*>(data), size)); }
  void commit();

 private:
  std::string path_, temporary_;
  unsigned mode_;
  int fd_ = -1;
};

// The file is created with `mode` and synced before the rename (an AtomicFileWriter).
void write_file_atomically(const std::string& path, std::span<const std::byte> data, unsigned mode = 0644);
void write_file_atomically(const std::string& path, const std::string& text, unsigned mode = 0644);

}  // namespace fedcal
