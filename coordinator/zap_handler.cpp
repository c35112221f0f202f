// The ZAP handler (RFC 27): libzmq asks it about every CURVE handshake on the agents' socket.
// Enrolled keys and unknown keys (which may only enroll) connect; a revoked key is refused here;
// everything a connection sends is checked against the registry per message (server.cpp). On the
// admin socket's domain only the key of admin.json connects, on the relays' only the keys in `relays`.
#include "coordinator/server.h"

namespace fedcal::coordinator {
namespace {

std::string z85_key(const uint8_t* raw) {
  char text[41];
  zmq_z85_encode(text, raw, 32);
  return text;
}

}  // namespace

void Server::handle_zap() {
  std::vector<zmq::message_t> request = receive_multipart(zap_);
  if (request.size() < 6) return;
  const std::string request_id = request[1].to_string();
  std::string status = "400", text = "refused", user_id;
  const std::string domain = request[2].to_string();
  const std::string mechanism = request[5].to_string();
  const std::string address = request[3].to_string();
  if ((domain != kZapDomain && domain != kAdminZapDomain && domain != kRelayZapDomain) || mechanism != "CURVE" ||
      request.size() != 7 || request[6].size() != 32) {
    text = "only CURVE in domains fedcal, fedcal-relay and fedcal-admin";
  } else if (domain == kRelayZapDomain) {
    // The relays' socket: only the keys in `relays`.
    const std::string key = z85_key(static_cast<const uint8_t*>(request[6].data()));
    if (relay_keys_.count(key)) {
      status = "200";
      text = "OK";
      user_id = key;
    } else {
      text = "not a relay key";
      refused(key, address, "relay", "connection refused: the key is not in the configuration's relays");
    }
  } else if (domain == kAdminZapDomain) {
    // The admin socket: only the client key written to admin.json at this start.
    if (z85_key(static_cast<const uint8_t*>(request[6].data())) == admin_access_.client.public_key) {
      status = "200";
      text = "OK";
      user_id = "admin";
    } else {
      text = "not the admin key";
      refused("", address, "admin client", "connection refused: not the key in admin.json");
    }
  } else {
    const std::string key = z85_key(static_cast<const uint8_t*>(request[6].data()));
    const auto agent = store_.agent_by_key(key);
    if (agent && agent->revoked_at_ms) {
      text = "revoked";
      refused(key, address, "agent " + std::to_string(agent->id), "connection refused: the agent is revoked");
    } else {
      // Enrolled keys and unknown keys (which may only enroll) connect; everything else a
      // connection sends is checked against the registry per message.
      status = "200";
      text = "OK";
      user_id = key;
    }
  }
  const std::string reply[] = {"1.0", request_id, status, text, user_id, ""};
  for (size_t i = 0; i < 6; ++i) zap_.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

}  // namespace fedcal::coordinator
