#include "common/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"

namespace fedcal {

std::string read_text_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("{}: cannot open: {}", path, std::strerror(errno));
  std::ostringstream content;
  content << in.rdbuf();
  if (in.bad()) fail("{}: read error", path);
  return content.str();
}

void write_all(int fd, std::span<const std::byte> data, const std::string& path) {
  size_t written = 0;
  while (written < data.size()) {
    const ssize_t n = ::write(fd, data.data() + written, data.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) fail("{}: write failed: {}", path, std::strerror(errno));
    written += static_cast<size_t>(n);
  }
}

void write_file_atomically(const std::string& path, std::span<const std::byte> data, unsigned mode) {
  const std::string temporary = path + ".tmp";
  const int fd = ::open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
  if (fd < 0) fail("{}: cannot create: {}", temporary, std::strerror(errno));
  try {
    write_all(fd, data, temporary);
  } catch (const Error&) {
    ::close(fd);
    ::unlink(temporary.c_str());
    throw;
  }
  if (::fchmod(fd, mode) != 0 || ::fsync(fd) != 0) {
    const int error = errno;
    ::close(fd);
    fail("{}: cannot sync: {}", temporary, std::strerror(error));
  }
  ::close(fd);
  if (std::rename(temporary.c_str(), path.c_str()) != 0) fail("{}: cannot rename into place: {}", path, std::strerror(errno));
}

void write_file_atomically(const std::string& path, const std::string& text, unsigned mode) {
  write_file_atomically(path, std::as_bytes(std::span(text.data(), text.size())), mode);
}

}  // namespace fedcal
