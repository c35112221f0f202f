// Agents behind relays (relay/): the relays' socket, where each relay forwards its agents' messages
// unchanged and reports who it heard from (protocol/relay_frames.h). A forwarded message is dispatched
// as the agent's own: the same replay window, registry check and handlers as on a direct connection,
// and answers go back through the relay to the agent's connection there.
#include "coordinator/server.h"
#include "protocol/relay_frames.h"

namespace fedcal::coordinator {

void Server::handle_relay_message() {
  std::vector<zmq::message_t> frames = receive_multipart(*relays_);
  if (frames.empty()) return;
  ++counters_.messages_received;
  for (const zmq::message_t& frame : frames) counters_.bytes_received += frame.size();
  const char* user_id = frames.back().gets("User-Id");
  const char* peer_address = frames.back().gets("Peer-Address");
  const std::string relay_key = user_id ? user_id : "";
  const std::string address = peer_address ? peer_address : "";
  const std::string peer = "relay " + relay_key;
  if (frames.size() < 3 || frames[1].to_string_view() != kRelayFrameTag) {
    refused(relay_key, address, peer, fmt::format("{} frames without the {} tag", frames.size(), kRelayFrameTag));
    return;
  }
  const std::string_view kind = frames[2].to_string_view();
  if (kind == kRelayPresenceFrame && frames.size() == 4) {
    relay_presence(frames[0].to_string(), relay_key, frames[3].to_string_view());
    return;
  }
  if (kind == kRelayGroupResultFrame && frames.size() == 4) {
    const std::span<const std::byte> payload(static_cast<const std::byte*>(frames[3].data()), frames[3].size());
    try {
      capture(UINT64_MAX, payload);  // a group's result: no agent's
      if (!round_) fail("no round is running");
      round_->relay_group_result(relay_key, payload);
    } catch (const std::exception& error) {
      refused(relay_key, address, peer, fmt::format("a group result: {}", error.what()));
    }
    return;
  }
  if (kind != kRelayAgentFrame || frames.size() != 7) {
    refused(relay_key, address, peer, fmt::format("a '{:.20}' message of {} frames is not one relays send", kind, frames.size()));
    return;
  }
  // [route] [tag] ["agent"] [agent's route at the relay] [agent's key] [agent's address] [envelope]
  const std::string agent_route = frames[3].to_string();
  const std::string agent_key = frames[4].to_string();
  if (agent_route.empty() || agent_route.size() > kMaxRouteBytes || agent_key.size() != kCurveKeyChars) {
    refused(relay_key, address, peer, "an agent's message without a route (1..255 bytes) and a 40-character key");
    return;
  }
  const Sender sender{{frames[0].to_string(), agent_route, agent_key, relay_key},
                      agent_key,
                      std::string(frames[5].to_string_view().substr(0, 64))};
  receive(sender, std::span(static_cast<const std::byte*>(frames[6].data()), frames[6].size()));
}

void Server::relay_presence(const std::string& relay_route, const std::string& relay_key, std::string_view entries) {
  std::vector<PresenceEntry> heard;
  try {
    heard = decode_presence(entries);
  } catch (const std::exception& error) {
    refused(relay_key, "", "relay " + relay_key, error.what());
    return;
  }
  relay_presence_entries_ += heard.size();
  std::vector<PresenceEntry> cut;
  for (const PresenceEntry& entry : heard) {
    const std::optional<AgentRecord> agent = registered_agent(entry.key);
    if (!agent || agent->revoked_at_ms) {
      cut.push_back(entry);
      continue;
    }
    heard_from(*agent, Route{relay_route, entry.route, entry.key, relay_key}, /*hello=*/false);
  }
  // The answer says the coordinator is alive (the relay answers heartbeats only while it hears from
  // us); then the agents it must stop answering for, if any.
  send_to_relay(relay_route, kRelayPresenceFrame, "");
  if (!cut.empty()) send_to_relay(relay_route, kRelayCutFrame, encode_presence(cut));
}

void Server::cut_at_relay(const Route& route) {
  if (!route.relayed_id.empty() && relays_)
    send_to_relay(route.id, kRelayCutFrame, encode_presence({{route.relayed_key, route.relayed_id}}));
}

std::optional<RoundHost::RelayedAgent> Server::relayed(int64_t agent_id) const {
  const auto session = sessions_.find(agent_id);
  if (session == sessions_.end() || session->second.route.relayed_id.empty()) return std::nullopt;
  const Route& route = session->second.route;
  return RelayedAgent{route.id, route.relayed_id, route.relayed_key, route.relay_key};
}

void Server::send_to_relay(const std::string& relay_route, std::string_view kind, const std::string& payload) {
  try {
    relays_->send(zmq::buffer(relay_route), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    relays_->send(zmq::buffer(kRelayFrameTag), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    relays_->send(zmq::buffer(kind), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    relays_->send(zmq::buffer(payload), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    ++counters_.dropped;  // the relay is gone (its agents fall silent) or does not read
  }
}

}  // namespace fedcal::coordinator
