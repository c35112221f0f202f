#include "coordinator/http_endpoint.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "common/error.h"

namespace fedcal::coordinator {
namespace {

constexpr size_t kMaxRequestBytes = 4096;
constexpr int64_t kConnectionTimeoutMs = 2000;  // to send the request

void set_nonblocking(int fd) { ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL, 0) | O_NONBLOCK); }

// Writes all of `data` to a socket whose peer reads it; gives up on a peer that does not (the
// connection is closed right after either way).
void send_all(int fd, const std::string& data) {
  size_t sent = 0;
  for (int tries = 0; sent < data.size() && tries < 1000; ++tries) {
    const ssize_t n = ::send(fd, data.data() + sent, data.size() - sent, MSG_NOSIGNAL);
    if (n > 0) {
      sent += static_cast<size_t>(n);
    } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
      return;
    }
  }
}

std::string response(const char* status, const char* type, const std::string& body) {
  return fmt::format(
      "HTTP/1.0 {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nCache-Control: no-store\r\n"
      "Content-Security-Policy: default-src 'none'; style-src 'unsafe-inline'\r\nX-Content-Type-Options: nosniff\r\n"
      "Connection: close\r\n\r\n{}",
      status, type, body.size(), body);
}

}  // namespace

HttpEndpoint::HttpEndpoint(const std::string& address, std::map<std::string, Route> routes) : routes_(std::move(routes)) {
  const size_t colon = address.rfind(':');
  if (colon == std::string::npos) fail("metrics_listen '{}': expected HOST:PORT (e.g. 127.0.0.1:9470)", address);
  sockaddr_in socket_address{};
  socket_address.sin_family = AF_INET;
  if (::inet_pton(AF_INET, address.substr(0, colon).c_str(), &socket_address.sin_addr) != 1)
    fail("metrics_listen '{}': '{}' is not an IPv4 address", address, address.substr(0, colon));
  int port = -1;
  try {
    port = std::stoi(address.substr(colon + 1));
  } catch (const std::exception&) {
  }
  if (port < 0 || port > 65535) fail("metrics_listen '{}': the port must be 0..65535", address);
  socket_address.sin_port = htons(static_cast<uint16_t>(port));
  listener_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listener_ < 0) fail("metrics_listen '{}': socket: {}", address, std::strerror(errno));
  const int yes = 1;
  ::setsockopt(listener_, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  if (::bind(listener_, reinterpret_cast<const sockaddr*>(&socket_address), sizeof(socket_address)) != 0 ||
      ::listen(listener_, 64) != 0) {
    const std::string why = std::strerror(errno);
    ::close(listener_);
    fail("metrics_listen '{}': cannot listen: {}", address, why);
  }
  set_nonblocking(listener_);
  socklen_t length = sizeof(socket_address);
  ::getsockname(listener_, reinterpret_cast<sockaddr*>(&socket_address), &length);
  bound_ = fmt::format("{}:{}", address.substr(0, colon), ntohs(socket_address.sin_port));
}

HttpEndpoint::~HttpEndpoint() {
  for (const Connection& connection : connections_) ::close(connection.fd);
  if (listener_ >= 0) ::close(listener_);
}

void HttpEndpoint::add_poll_items(std::vector<zmq::pollitem_t>& items) const {
  items.push_back({nullptr, listener_, ZMQ_POLLIN, 0});
  for (const Connection& connection : connections_) items.push_back({nullptr, connection.fd, ZMQ_POLLIN, 0});
}

void HttpEndpoint::evict_oldest(const std::function<bool(const Connection&)>& which) {
  // Connections are kept in the order they were accepted.
  const auto oldest = std::find_if(connections_.begin(), connections_.end(), which);
  if (oldest == connections_.end()) return;
  ::close(oldest->fd);
  connections_.erase(oldest);
  ++evicted_;
}

void HttpEndpoint::handle(int64_t monotonic_ms) {
  // A new connection is always accepted: at the limits (in all, or from its address) the oldest
  // unanswered one goes instead. An honest request is complete moments after its connect, so
  // connections that trickle their headers (slowloris) are the ones evicted, not the scraper.
  for (int accepted = 0; accepted < 64; ++accepted) {
    sockaddr_in peer{};
    socklen_t length = sizeof(peer);
    const int fd = ::accept4(listener_, reinterpret_cast<sockaddr*>(&peer), &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) break;
    const uint32_t address = peer.sin_addr.s_addr;
    const auto from_address = [address](const Connection& c) { return c.address == address; };
    if (static_cast<size_t>(std::count_if(connections_.begin(), connections_.end(), from_address)) >= kMaxPerAddress)
      evict_oldest(from_address);
    if (connections_.size() >= kMaxConnections) evict_oldest([](const Connection&) { return true; });
    connections_.push_back({fd, monotonic_ms, {}, address});
  }
  for (auto it = connections_.begin(); it != connections_.end();) {
    bool done = false;
    char buffer[1024];
    for (;;) {
      const ssize_t n = ::recv(it->fd, buffer, sizeof(buffer), 0);
      if (n > 0) {
        it->request.append(buffer, static_cast<size_t>(n));
        if (it->request.size() > kMaxRequestBytes) {
          send_all(it->fd, response("431 Request Header Fields Too Large", "text/plain", "request too large\n"));
          done = true;
          break;
        }
        continue;
      }
      if (n == 0) done = true;  // the peer closed
      break;
    }
    if (!done && it->request.find("\r\n\r\n") != std::string::npos) {
      answer(*it);
      done = true;
    }
    if (done || monotonic_ms - it->opened_ms > kConnectionTimeoutMs) {
      ::close(it->fd);
      it = connections_.erase(it);
    } else {
      ++it;
    }
  }
}

void HttpEndpoint::answer(Connection& connection) {
  // "GET /path HTTP/1.x" (or HTTP/0.9's "GET /path"); a query string is ignored.
  const std::string line = connection.request.substr(0, connection.request.find("\r\n"));
  if (line.rfind("GET ", 0) != 0) {
    send_all(connection.fd, response("405 Method Not Allowed", "text/plain", "GET only\n"));
    return;
  }
  std::string path = line.substr(4, line.find(' ', 4) == std::string::npos ? std::string::npos : line.find(' ', 4) - 4);
  path = path.substr(0, path.find('?'));
  const auto route = routes_.find(path);
  if (route == routes_.end()) {
    std::string paths;
    for (const auto& [known, unused] : routes_) paths += (paths.empty() ? "" : ", ") + known;
    send_all(connection.fd, response("404 Not Found", "text/plain", "fedcal serves " + paths + "\n"));
    return;
  }
  std::string body;
  try {
    body = route->second.render();
  } catch (const std::exception& e) {  // the boundary: the caller learns why, the daemon goes on
    send_all(connection.fd, response("500 Internal Server Error", "text/plain", fmt::format("{}: {}\n", path, e.what())));
    return;
  }
  send_all(connection.fd, response("200 OK", route->second.content_type.c_str(), body));
}

}  // namespace fedcal::coordinator
