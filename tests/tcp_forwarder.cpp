#include "tests/tcp_forwarder.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>
#include <string>

namespace fedcal::testing {
namespace {

sockaddr_in loopback(int port) {
  sockaddr_in address{};
  address.sin_family = AF_INET;
  address.sin_port = htons(static_cast<uint16_t>(port));
  address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  return address;
}

// Writes all of `size` bytes (blocking: loopback peers read promptly); false if the peer is gone.
bool write_all(int fd, const char* data, size_t size) {
  while (size > 0) {
    const ssize_t written = ::send(fd, data, size, MSG_NOSIGNAL);
    if (written <= 0) return false;
    data += written;
    size -= static_cast<size_t>(written);
  }
  return true;
}

}  // namespace

TcpForwarder::TcpForwarder(int target_port) : target_port_(target_port) {
  listener_ = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in address = loopback(0);
  socklen_t length = sizeof(address);
  if (listener_ < 0 || ::bind(listener_, reinterpret_cast<sockaddr*>(&address), sizeof(address)) != 0 ||
      ::listen(listener_, 16) != 0 || ::getsockname(listener_, reinterpret_cast<sockaddr*>(&address), &length) != 0 ||
      ::pipe(wake_) != 0)
    throw std::runtime_error("tcp forwarder: cannot listen on loopback");
  port_ = ntohs(address.sin_port);
  thread_ = std::thread([this] { run(); });
}

void TcpForwarder::wake() {
  const char byte = 0;
  (void)!::write(wake_[1], &byte, 1);
}

TcpForwarder::~TcpForwarder() {
  stop_ = true;
  wake();
  thread_.join();
  close_all();
  ::close(listener_);
  ::close(wake_[0]);
  ::close(wake_[1]);
}

void TcpForwarder::cut() {
  cut_ = true;
  wake();
  while (cut_) std::this_thread::sleep_for(std::chrono::milliseconds(1));  // done on the thread
}

void TcpForwarder::close_all() {
  for (const Pair& pair : pairs_) {
    ::close(pair.client);
    ::close(pair.target);
  }
  pairs_.clear();
}

void TcpForwarder::run() {
  char buffer[65536];
  while (!stop_) {
    std::vector<pollfd> fds = {{wake_[0], POLLIN, 0}, {listener_, POLLIN, 0}};
    for (const Pair& pair : pairs_) {
      fds.push_back({pair.client, POLLIN, 0});
      fds.push_back({pair.target, static_cast<short>(hold_ ? 0 : POLLIN), 0});
    }
    if (::poll(fds.data(), fds.size(), 1000) < 0) continue;
    if (fds[0].revents & POLLIN) (void)!::read(wake_[0], buffer, sizeof(buffer));
    if (cut_) {
      close_all();
      to_target_since_cut_ = 0;
      cut_ = false;
      continue;
    }
    const size_t polled = pairs_.size();  // pairs accepted below are polled from the next turn
    if (fds[1].revents & POLLIN) {
      const int client = ::accept(listener_, nullptr, nullptr);
      const int target = ::socket(AF_INET, SOCK_STREAM, 0);
      const sockaddr_in address = loopback(target_port_);
      if (client >= 0 && target >= 0 && ::connect(target, reinterpret_cast<const sockaddr*>(&address), sizeof(address)) == 0) {
        pairs_.push_back({client, target});
        ++accepted_;
      } else {
        if (client >= 0) ::close(client);
        if (target >= 0) ::close(target);
      }
    }
    std::vector<Pair> alive(pairs_.begin() + static_cast<std::ptrdiff_t>(polled), pairs_.end());
    for (size_t i = 0; i < polled; ++i) {
      const Pair& pair = pairs_[i];
      bool open = true;
      for (const bool from_client : {true, false}) {
        const pollfd& fd = fds[2 + 2 * i + (from_client ? 0 : 1)];
        if (!open || !(fd.revents & (POLLIN | POLLHUP | POLLERR)) || (!from_client && hold_)) continue;
        const ssize_t got = ::recv(fd.fd, buffer, sizeof(buffer), 0);
        if (got <= 0 || !write_all(from_client ? pair.target : pair.client, buffer, static_cast<size_t>(got))) {
          open = false;
          continue;
        }
        if (from_client) to_target_since_cut_ += got;
      }
      if (open) {
        alive.push_back(pair);
      } else {
        ::close(pair.client);
        ::close(pair.target);
      }
    }
    pairs_ = std::move(alive);
  }
}

}  // namespace fedcal::testing
