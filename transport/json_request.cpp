#include "transport/json_request.h"

#include <zmq.hpp>

#include "common/error.h"

namespace fedcal {

nlohmann::json json_request(const std::string& endpoint, const nlohmann::json& request, int timeout_ms, const std::string& daemon,
                            const std::function<void(zmq::socket_t&)>& configure) {
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
