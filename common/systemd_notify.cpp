#include "common/systemd_notify.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstddef>
#include <cstdlib>
#include <cstring>

namespace fedcal {

SystemdNotifier::SystemdNotifier() {
  if (const char* path = std::getenv("NOTIFY_SOCKET")) socket_path_ = path;
  const char* usec = std::getenv("WATCHDOG_USEC");
  const char* pid = std::getenv("WATCHDOG_PID");
  const bool ours = pid == nullptr || std::strtoll(pid, nullptr, 10) == static_cast<long long>(::getpid());
  if (usec != nullptr && ours) watchdog_interval_ms_ = std::strtoll(usec, nullptr, 10) / 1000;
}

void SystemdNotifier::keep_alive(int64_t monotonic_ms) {
  if (watchdog_interval_ms_ <= 0) return;
  if (last_ping_ms_ >= 0 && monotonic_ms - last_ping_ms_ < watchdog_interval_ms_ / 2) return;
  last_ping_ms_ = monotonic_ms;
  send("WATCHDOG=1");
}

void SystemdNotifier::send(const std::string& message) const {
  if (socket_path_.empty() || socket_path_.size() >= sizeof(sockaddr_un::sun_path)) return;
  sockaddr_un address{};
  address.sun_family = AF_UNIX;
  std::memcpy(address.sun_path, socket_path_.data(), socket_path_.size());
  if (address.sun_path[0] == '@') address.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;  // best effort: a notification never stops the daemon
  const auto length = static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + socket_path_.size());
  [[maybe_unused]] const auto sent =
      ::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<const sockaddr*>(&address), length);
  ::close(fd);
}

}  // namespace fedcal
