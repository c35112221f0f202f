#include "transport/json_request.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.hpp>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>

#include "common/error.h"

namespace fedcal {
namespace {

// False when nothing listens on a tcp:// or ipc:// endpoint (the connection is refused, the socket
// file is missing): then no daemon can answer, and waiting for it would only delay saying so. True
// otherwise, including when it cannot tell within `timeout_ms`.
bool anything_listens(const std::string& endpoint, int timeout_ms) {
  sockaddr_storage address{};
  socklen_t length = 0;
  if (endpoint.rfind("tcp://", 0) == 0) {
    const size_t colon = endpoint.rfind(':');
    auto& in = reinterpret_cast<sockaddr_in&>(address);
    in.sin_family = AF_INET;
    if (colon == std::string::npos || ::inet_pton(AF_INET, endpoint.substr(6, colon - 6).c_str(), &in.sin_addr) != 1) return true;
    in.sin_port = htons(static_cast<uint16_t>(std::atoi(endpoint.c_str() + colon + 1)));
    length = sizeof(sockaddr_in);
  } else if (endpoint.rfind("ipc://", 0) == 0) {
    auto& un = reinterpret_cast<sockaddr_un&>(address);
    un.sun_family = AF_UNIX;
    const std::string path = endpoint.substr(6);
    if (path.size() >= sizeof(un.sun_path)) return true;
    std::memcpy(un.sun_path, path.c_str(), path.size() + 1);
    length = sizeof(sockaddr_un);
  } else {
    return true;
  }
  const int fd = ::socket(address.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  bool listening = true;
  if (::connect(fd, reinterpret_cast<sockaddr*>(&address), length) != 0) {
    if (errno == ECONNREFUSED || errno == ENOENT) {
      listening = false;
    } else if (errno == EINPROGRESS) {
      pollfd poll_fd{fd, POLLOUT, 0};
      if (::poll(&poll_fd, 1, timeout_ms) == 1) {
        int error = 0;
        socklen_t size = sizeof(error);
        ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &size);
        listening = error != ECONNREFUSED;
      }
    }
  }
  ::close(fd);
  return listening;
}

}  // namespace

nlohmann::json json_request(const std::string& endpoint, const nlohmann::json& request, int timeout_ms, const std::string& daemon,
                            const std::function<void(zmq::socket_t&)>& configure) {
  if (!anything_listens(endpoint, std::min(timeout_ms, 1500))) {
    fail("nothing listens on {} (is `{}` running with this config?)", endpoint, daemon);
  }
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::req);
  socket.set(zmq::sockopt::linger, 0);
  if (configure) configure(socket);
  socket.connect(endpoint);
  const std::string text = request.dump();
  socket.send(zmq::buffer(text), zmq::send_flags::none);
  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
  zmq::message_t reply;
  if (!(item.revents & ZMQ_POLLIN) || !socket.recv(reply, zmq::recv_flags::dontwait)) {
    fail("nothing answered on {} within {} s (is `{}` running with this config?)", endpoint, timeout_ms / 1000, daemon);
  }
  nlohmann::json parsed = nlohmann::json::parse(reply.to_string_view(), nullptr, false);
  if (parsed.is_discarded() || !parsed.is_object()) fail("{}: the reply is not a JSON object", endpoint);
  if (!parsed.value("ok", false)) fail("{}", parsed.value("error", std::string("the request was refused")));
  parsed.erase("ok");
  return parsed;
}

}  // namespace fedcal
