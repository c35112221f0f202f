#include "coordinator/state_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "common/error.h"

namespace fedcal::coordinator {

StateLock::StateLock(const std::string& state_dir, const std::string& holder) {
  std::filesystem::create_directories(state_dir);
  const std::string path = state_dir + "/lock";
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (fd_ < 0) fail("{}: cannot open: {}", path, std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int error = errno;
    char text[256] = {};
    const ssize_t n = ::pread(fd_, text, sizeof(text) - 1, 0);
    ::close(fd_);
    fd_ = -1;
    if (error != EWOULDBLOCK) fail("{}: cannot lock: {}", path, std::strerror(error));
    std::string held = n > 0 ? std::string(text, static_cast<size_t>(n)) : "another process";
    while (!held.empty() && (held.back() == '\n' || held.back() == '\r')) held.pop_back();
    fail("{} is in use by {} (stopped processes hold it too): stop it first", state_dir, held);
  }
  const std::string text = std::to_string(::getpid()) + " (" + holder + ")\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size())) {
    // The lock holds either way; only the holder's name in the file is missing.
  }
}

StateLock::~StateLock() {
  if (fd_ >= 0) ::close(fd_);  // releases the lock
}

}  // namespace fedcal::coordinator
