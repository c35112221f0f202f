#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/text.h"

namespace fedcal {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return content.str();
}

std::string read_utf8_text_file(const std::string& path) {
  std::string text = read_text_file(path);
  if (const auto bad = first_non_text_byte(text))
    fail("{}: not UTF-8 text (byte 0x{:02x} at offset {})", path, static_cast<unsigned char>(text[*bad]), *bad);
  return text;
}

void write_all(int fd, std::span<const std::byte> data, const std::string& path) {
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail_as(ErrorKind::kIo, "{}: write failed: {}", path, n < 0 ? std::strerror(errno) : "nothing written");
    written += static_cast<size_t>(n);
  }
}

AtomicFileWriter::AtomicFileWriter(std::string path, unsigned mode)
    : path_(std::move(path)), temporary_(path_ + ".tmp"), mode_(mode) {
  fd_ = ::open(temporary_.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd_ < 0) fail("{}: cannot create: {}", temporary_, std::strerror(errno));
}

AtomicFileWriter::~AtomicFileWriter() {
  if (fd_ < 0) return;
  ::close(fd_);
  ::unlink(temporary_.c_str());
}

void AtomicFileWriter::write(std::span<const std::byte> data) {
  if (fd_ < 0) fail("{}: written after commit", path_);
  write_all(fd_, data, temporary_);
}

void AtomicFileWriter::commit() {
  if (fd_ < 0) fail("{}: committed twice", path_);
  if (::fchmod(fd_, mode_) != 0 || ::fsync(fd_) != 0) fail("{}: cannot sync: {}", temporary_, std::strerror(errno));
  const int fd = fd_;
  fd_ = -1;
  if (::close(fd) != 0) {
    ::unlink(temporary_.c_str());
    fail("{}: cannot close: {}", temporary_, std::strerror(errno));
  }
  if (std::rename(temporary_.c_str(), path_.c_str()) != 0) {
    const int error = errno;
    ::unlink(temporary_.c_str());
    fail("{}: cannot rename into place: {}", path_, std::strerror(error));
  }
  // The rename itself is durable once the folder is synced.
  const std::string folder =
      std::filesystem::path(path_).parent_path().empty() ? "." : std::filesystem::path(path_).parent_path().string();
  const int dir = ::open(folder.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dir >= 0) {
    ::fsync(dir);
    ::close(dir);
  }
}

void write_file_atomically(const std::string& path, std::span<const std::byte> data, unsigned mode) {
  AtomicFileWriter file(path, mode);
  file.write(data);
  file.commit();
}

void write_file_atomically(const std::string& path, const std::string& text, unsigned mode) {
  write_file_atomically(path, std::as_bytes(std::span(text.data(), text.size())), mode);
}

}  // namespace fedcal
