#include "edge_agent/enrollment.h"

#include <nlohmann/json.hpp>
#include <zmq.hpp>

#include <chrono>
#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"
#include "common/hex.h"
#include "protocol/wire.h"
#include "transport/curve.h"

namespace fedcal::edge_agent {
namespace {

std::vector<uint8_t> from_hex(const std::string& text, const std::string& what) {
  auto nibble = [&](char c) -> uint8_t {
    if (c >= '0' && c <= '9') return static_cast<uint8_t>(c - '0');
    if (c >= 'a' && c <= 'f') return static_cast<uint8_t>(c - 'a' + 10);
    fail("{}: not lowercase hex", what);
  };
  if (text.size() % 2 != 0) fail("{}: odd hex length", what);
  std::vector<uint8_t> out;
  for (size_t i = 0; i < text.size(); i += 2) out.push_back(static_cast<uint8_t>(nibble(text[i]) << 4 | nibble(text[i + 1])));
  return out;
}

}  // namespace

SigningKey Enrollment::signing_key() const {
  return SigningKey::from_public_bytes(from_hex(signing_public_key, "signing_public_key"));
}

std::optional<Enrollment> Enrollment::read(const std::string& path) {
  if (!std::filesystem::exists(path)) return std::nullopt;
  return with_context([&] { return path; },
                      [&] {
                        const nlohmann::json json = nlohmann::json::parse(read_text_file(path), nullptr, false);
                        if (json.is_discarded() || !json.is_object()) fail("not a JSON object");
                        Enrollment enrollment;
                        try {
                          enrollment.agent_id = json.at("agent_id").get<int64_t>();
                          enrollment.coordinator = json.at("coordinator").get<std::string>();
                          enrollment.coordinator_key = json.at("coordinator_key").get<std::string>();
                          enrollment.signing_public_key = json.at("signing_public_key").get<std::string>();
                        } catch (const nlohmann::json::exception& error) {
                          fail("{}", error.what());
                        }
                        enrollment.signing_key();  // validates
                        return enrollment;
                      });
}

void Enrollment::write(const std::string& path) const {
  const nlohmann::json json = {{"agent_id", agent_id},
                               {"coordinator", coordinator},
                               {"coordinator_key", coordinator_key},
                               {"signing_public_key", signing_public_key}};
  write_file_atomically(path, json.dump(2) + "\n", 0600);
}

Enrollment enroll(const std::string& state_dir, const std::string& coordinator, const std::string& coordinator_key,
                  const std::string& token, const std::string& name, int timeout_ms) {
  std::filesystem::create_directories(state_dir);
  const CurveKeyPair keys = CurveKeyPair::read_or_create(state_dir + "/curve.key");
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  configure_curve_client(socket, keys, coordinator_key, SocketLimits{});
  socket.connect(coordinator);

  OutgoingMessage message;
  auto request = message.body().initEnroll();
  request.setToken(token);
  request.setName(name);
  const auto bytes = message.encode(static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count()));
  socket.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore);
  socket.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);

  zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLIN, 0};
  zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
  if (!(item.revents & ZMQ_POLLIN)) {
    fail("no answer from the coordinator at {} within {} s (address, coordinator key and firewall?)", coordinator,
         timeout_ms / 1000);
  }
  zmq::message_t tag, payload;
  (void)socket.recv(tag);
  if (!tag.more() || !socket.recv(payload)) fail("{}: malformed reply", coordinator);
  DecodedEnvelope decoded = decode_envelope(std::span(static_cast<const std::byte*>(payload.data()), payload.size()));
  return reading_message([&] {
    const auto body = decoded.envelope().getBody();
    if (body.which() == wire::Envelope::Body::ERROR)
      fail("the coordinator refused the enrollment: {}", body.getError().getMessage().cStr());
    if (body.which() != wire::Envelope::Body::ENROLLED)
      fail("{}: unexpected reply '{}'", coordinator, body_name(decoded.envelope()));
    Enrollment enrollment;
    enrollment.agent_id = static_cast<int64_t>(body.getEnrolled().getAgentId());
    enrollment.coordinator = coordinator;
    enrollment.coordinator_key = coordinator_key;
    const auto key = body.getEnrolled().getSigningKey();
    enrollment.signing_public_key = to_hex(std::as_bytes(std::span(key.begin(), key.size())));
    enrollment.signing_key();
    enrollment.write(state_dir + "/enrollment.json");
    return enrollment;
  });
}

}  // namespace fedcal::edge_agent
