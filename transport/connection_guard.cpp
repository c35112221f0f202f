#include "transport/connection_guard.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/resource.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>

#include "common/error.h"

namespace fedcal {
namespace {

// The peer's IP address of a connected socket; empty when it is not one (or no longer).
std::string peer_address(int fd) {
  sockaddr_storage address{};
  socklen_t length = sizeof(address);
  if (::getpeername(fd, reinterpret_cast<sockaddr*>(&address), &length) != 0) return {};
  char text[INET6_ADDRSTRLEN] = {};
  if (address.ss_family == AF_INET) {
    ::inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(&address)->sin_addr, text, sizeof(text));
  } else if (address.ss_family == AF_INET6) {
    ::inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(&address)->sin6_addr, text, sizeof(text));
  } else {
    return "local";
  }
  return text;
}

}  // namespace

ConnectionGuard::ConnectionGuard(zmq::context_t& context, zmq::socket_t& watched, const std::string& name, Limits limits)
    : limits_(limits), monitor_(context, zmq::socket_type::pair) {
  const std::string endpoint = "inproc://fedcal-monitor-" + name;
  const int events = ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_ACCEPT_FAILED | ZMQ_EVENT_DISCONNECTED;
  if (zmq_socket_monitor(watched.handle(), endpoint.c_str(), events) != 0) {
    fail("cannot monitor the {} socket: {}", name, zmq_strerror(zmq_errno()));
  }
  monitor_.set(zmq::sockopt::rcvhwm, 0);  // no event may be dropped: the counts depend on each
  monitor_.set(zmq::sockopt::linger, 0);
  monitor_.connect(endpoint);
}

void ConnectionGuard::handle_events() {
  for (int i = 0; i < 4096; ++i) {
    zmq::message_t event, endpoint;
    if (!monitor_.recv(event, zmq::recv_flags::dontwait)) return;
    if (event.more()) (void)monitor_.recv(endpoint);
    if (event.size() < 6) continue;
    uint16_t id = 0;
    uint32_t value = 0;
    std::memcpy(&id, event.data(), 2);
    std::memcpy(&value, static_cast<const char*>(event.data()) + 2, 4);
    if (id == ZMQ_EVENT_ACCEPTED) accepted(static_cast<int>(value));
    if (id == ZMQ_EVENT_DISCONNECTED) closed(static_cast<int>(value));
    if (id == ZMQ_EVENT_ACCEPT_FAILED) {
      ++report_.accept_failures;
      report_.last_accept_errno = static_cast<int>(value);
    }
  }
}

void ConnectionGuard::accepted(int fd) {
  closed(fd);  // a descriptor libzmq reused before its disconnect event was read
  // The address is read now: if libzmq already closed `fd` and gave the number to a newer
  // connection, this counts (and may cut) that one, whose own accept event follows.
  const std::string address = peer_address(fd);
  if (address.empty()) return;
  open_[fd] = address;
  const size_t from_address = ++by_address_[address];
  if (open_.size() > limits_.total || from_address > limits_.per_address) {
    ::shutdown(fd, SHUT_RDWR);
    ++report_.cut[address];
  }
}

void ConnectionGuard::closed(int fd) {
  const auto entry = open_.find(fd);
  if (entry == open_.end()) return;
  const auto count = by_address_.find(entry->second);
  if (--count->second == 0) by_address_.erase(count);
  open_.erase(entry);
}

ConnectionGuard::Report ConnectionGuard::take_report() {
  Report out = std::move(report_);
  report_ = Report{};
  out.open = open_.size();
  return out;
}

size_t raise_file_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0) fail("getrlimit(RLIMIT_NOFILE): {}", std::strerror(errno));
  if (limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    if (::setrlimit(RLIMIT_NOFILE, &limit) != 0) ::getrlimit(RLIMIT_NOFILE, &limit);
  }
  return limit.rlim_cur == RLIM_INFINITY ? size_t{1} << 20 : static_cast<size_t>(limit.rlim_cur);
}

ConnectionGuard::Limits connection_limits(size_t file_limit, size_t per_address) {
  const size_t reserve = std::max<size_t>(std::min<size_t>(64, file_limit / 2), file_limit / 8);
  return {file_limit - reserve, per_address};
}

}  // namespace fedcal
