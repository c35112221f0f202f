#include "relay/relay.h"

#include <fmt/format.h>

#include <filesystem>

#include "common/clock.h"
#include "common/error.h"
#include "common/log_line.h"
#include "common/systemd_notify.h"
#include "protocol/wire.h"

namespace fedcal::relay {
namespace {

using Body = wire::Envelope::Body;

// Only messages this small are looked into (heartbeats from agents; welcomes and errors from the
// coordinator): chunks and statistics pass through undecoded.
constexpr size_t kPeekBytes = 4096;

std::string z85_key(const uint8_t* raw) {
  char text[41];
  zmq_z85_encode(text, raw, 32);
  return text;
}

// The body of a small envelope, or nullopt (too large to look into, or undecodable: the coordinator
// judges those).
std::optional<Body::Which> peek_body(const zmq::message_t& frame) {
  if (frame.size() > kPeekBytes) return std::nullopt;
  try {
    DecodedEnvelope decoded = decode_envelope(std::span(static_cast<const std::byte*>(frame.data()), frame.size()));
    return reading_message([&] { return decoded.envelope().getBody().which(); });
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void send_frames(zmq::socket_t& socket, std::initializer_list<std::string_view> frames, const zmq::message_t* last) {
  size_t i = 0;
  for (const std::string_view frame : frames) {
    const bool more = ++i < frames.size() || last != nullptr;
    socket.send(zmq::buffer(frame), (more ? zmq::send_flags::sndmore : zmq::send_flags::none) | zmq::send_flags::dontwait);
  }
  if (last != nullptr) socket.send(zmq::buffer(last->data(), last->size()), zmq::send_flags::dontwait);
}

}  // namespace

Relay::Relay(RelayConfig config)
    : config_(std::move(config)),
      keys_([&] {
        std::filesystem::create_directories(config_.state_dir);
        return CurveKeyPair::read_or_create(config_.curve_key_path());
      }()),
      context_(1),
      zap_(context_, zmq::socket_type::rep),
      agents_(context_, zmq::socket_type::router),
      coordinator_(context_, zmq::socket_type::dealer),
      next_sequence_(static_cast<uint64_t>(wall_ms()) * 1000) {
  zap_.bind(kZapEndpoint);  // before the ROUTER, so no handshake ever runs without it
  SocketLimits limits;
  limits.max_message_bytes = config_.max_message_bytes;
  limits.heartbeat_interval_ms = config_.transport_pings ? 2000 : 0;
  limits.heartbeat_timeout_ms = config_.coordinator_timeout_ms;
  limits.tcp_keepalive_idle_s = std::max(1, config_.coordinator_timeout_ms / 1000);
  limits.handshake_timeout_ms = config_.handshake_timeout_ms;
  configure_curve_server(agents_, keys_, kRelayAgentsZapDomain, limits);
  agents_.set(zmq::sockopt::sndhwm, 64);
  const size_t file_limit = raise_file_limit();
  connection_guard_ = std::make_unique<ConnectionGuard>(
      context_, agents_, "agents", connection_limits(file_limit, static_cast<size_t>(config_.max_connections_per_address)));
  try {
    agents_.bind(config_.listen);
  } catch (const zmq::error_t& error) {
    fail("cannot listen on {}: {}", config_.listen, error.what());
  }
  // One connection carries every agent's messages: queues deep enough for a round's announcement to all.
  SocketLimits upstream;
  upstream.max_message_bytes = config_.max_message_bytes;
  upstream.heartbeat_interval_ms = 2000;
  upstream.heartbeat_timeout_ms = config_.coordinator_timeout_ms;
  configure_curve_client(coordinator_, keys_, config_.coordinator_key, upstream);
  coordinator_.set(zmq::sockopt::sndhwm, 1 << 20);
  coordinator_.set(zmq::sockopt::rcvhwm, 1 << 20);
  endpoints_.push_back(config_.coordinator);
  endpoints_.insert(endpoints_.end(), config_.standby_coordinators.begin(), config_.standby_coordinators.end());
  coordinator_.connect(endpoints_[0]);
  endpoint_since_ms_ = steady_ms();
  if (!config_.capture_file.empty()) {
    capture_.open(config_.capture_file, std::ios::binary | std::ios::app);
    if (!capture_) fail("{}: cannot open the capture file", config_.capture_file);
  }
  log(fmt::format("listening on {} (CURVE public key {}), forwarding to {}; file descriptors: {}", config_.listen,
                  keys_.public_key, endpoints_[0], file_limit));
}

void Relay::log(const std::string& line) { write_log(LogLevel::kInfo, "relay", line); }

void Relay::run(const std::atomic<bool>& stop) {
  zmq::pollitem_t items[] = {{agents_.handle(), 0, ZMQ_POLLIN, 0},
                             {coordinator_.handle(), 0, ZMQ_POLLIN, 0},
                             {zap_.handle(), 0, ZMQ_POLLIN, 0},
                             {connection_guard_->events().handle(), 0, ZMQ_POLLIN, 0}};
  SystemdNotifier systemd;
  systemd.ready();
  last_report_ms_ = steady_ms();
  while (!stop) {
    const int64_t now = steady_ms();
    systemd.keep_alive(now);
    if (now - last_presence_ms_ >= config_.presence_interval_ms) send_presence(now);
    tick_groups(now);
    coordinator_silent(now);
    if (now - last_report_ms_ >= 60000) {
      log(fmt::format("{} agent connections, {} welcomed; forwarded {} up, {} down; {} heartbeats answered here, {} dropped",
                      connection_guard_->open(), welcomed_.size(), counters_.forwarded_up, counters_.forwarded_down,
                      counters_.heartbeats_answered, counters_.dropped));
      last_report_ms_ = now;
    }
    if (!poll_interruptible(items, 4, std::chrono::milliseconds(50))) continue;
    if (items[3].revents & ZMQ_POLLIN) connection_guard_->handle_events();
    if (items[2].revents & ZMQ_POLLIN) handle_zap();
    // Bounded batches, so neither side starves the other.
    for (int i = 0; i < 1024 && (coordinator_.get(zmq::sockopt::events) & ZMQ_POLLIN); ++i) from_coordinator();
    for (int i = 0; i < 1024 && (agents_.get(zmq::sockopt::events) & ZMQ_POLLIN); ++i) from_agent();
  }
  systemd.stopping();
  log("stopping");
}

void Relay::handle_zap() {
  std::vector<zmq::message_t> request = receive_multipart(zap_);
  if (request.size() < 6) return;
  std::string status = "400", text = "refused", user_id;
  // Any CURVE key connects (an agent may be enrolling through the relay); the coordinator judges
  // every message by the key the relay names.
  if (request[2].to_string_view() == kRelayAgentsZapDomain && request[5].to_string_view() == "CURVE" && request.size() == 7 &&
      request[6].size() == 32) {
    status = "200";
    text = "OK";
    user_id = z85_key(static_cast<const uint8_t*>(request[6].data()));
  }
  const std::string reply[] = {"1.0", request[1].to_string(), status, text, user_id, ""};
  for (size_t i = 0; i < 6; ++i) zap_.send(zmq::buffer(reply[i]), i + 1 < 6 ? zmq::send_flags::sndmore : zmq::send_flags::none);
}

void Relay::from_agent() {
  std::vector<zmq::message_t> frames = receive_multipart(agents_);
  if (frames.empty()) return;
  const char* user_id = frames.back().gets("User-Id");
  const char* address = frames.back().gets("Peer-Address");
  const std::string key = user_id ? user_id : "";
  if (frames.size() != 3 || frames[1].to_string_view() != kFrameTag || key.size() != kCurveKeyChars) {
    ++counters_.refused;  // not our protocol: the coordinator would refuse it too
    return;
  }
  const std::string route = frames[0].to_string();
  const int64_t now = steady_ms();
  const auto member = members_.find(key);
  if (member != members_.end()) {
    const auto group = groups_.find(member->second.group);
    if (group != groups_.end() && group->second.routes.at(member->second.index) != route) {
      group->second.routes.at(member->second.index) = route;  // a member on a new connection
      group->second.round->resend(member->second.index);
    }
  }
  if (coordinator_alive(now) && welcomed_.count(key) && peek_body(frames[2]) == Body::HEARTBEAT) {
    answer_heartbeat(route);
    if (heard_keys_.insert(key).second) heard_.push_back({key, route});
    return;
  }
  if (member != members_.end() && to_group(key, route, frames[2])) return;
  try {
    send_frames(coordinator_, {kRelayFrameTag, kRelayAgentFrame, route, key, address ? address : ""}, &frames[2]);
    ++counters_.forwarded_up;
  } catch (const zmq::error_t&) {
    ++counters_.dropped;
  }
}

void Relay::from_coordinator() {
  std::vector<zmq::message_t> frames = receive_multipart(coordinator_);
  if (frames.empty()) return;
  last_coordinator_ms_ = steady_ms();
  const std::string_view kind = frames.size() >= 2 ? frames[1].to_string_view() : std::string_view();
  if (frames.size() < 2 || frames[0].to_string_view() != kRelayFrameTag) {
    ++counters_.refused;
    return;
  }
  if (kind == kRelayAgentFrame && frames.size() == 5) {
    // [tag] ["agent"] [route] [key] [envelope]
    const std::string key = frames[3].to_string();
    const std::optional<Body::Which> body = peek_body(frames[4]);
    if (body == Body::WELCOME) welcomed_.insert(key);
    if (body == Body::ERROR) welcomed_.erase(key);  // refused (not enrolled, revoked) or out of step: its heartbeats go through
    send_to_agent(frames[2].to_string(), frames[4]);
    return;
  }
  if (kind == kRelayPresenceFrame) return;  // the coordinator is alive
  if (kind == kRelayGroupFrame && frames.size() == 3) {
    start_group(frames[2].to_string_view());
    return;
  }
  if (kind == kRelayCutFrame && frames.size() == 3) {
    try {
      for (const PresenceEntry& entry : decode_presence(frames[2].to_string_view())) welcomed_.erase(entry.key);
    } catch (const std::exception& error) {
      ++counters_.refused;
      log(fmt::format("a malformed cut from the coordinator: {}", error.what()));
    }
    return;
  }
  ++counters_.refused;
}

void Relay::send_presence(int64_t now) {
  last_presence_ms_ = now;
  // Entries of at most 296 bytes: 100,000 agents make a 30 MB report at most, below the message cap.
  try {
    const std::string payload = encode_presence(heard_);
    send_frames(coordinator_, {kRelayFrameTag, kRelayPresenceFrame, payload}, nullptr);
    ++counters_.presence_sent;
  } catch (const zmq::error_t&) {
    ++counters_.dropped;
  }
  heard_.clear();
  heard_keys_.clear();
}

void Relay::coordinator_silent(int64_t now) {
  if (coordinator_alive(now)) return;
  if (!welcomed_.empty()) {
    log(fmt::format("no word from the coordinator for {} ms: heartbeats go through again", config_.coordinator_timeout_ms));
    welcomed_.clear();
  }
  if (endpoints_.size() > 1 && now - std::max(last_coordinator_ms_, endpoint_since_ms_) > config_.coordinator_timeout_ms) {
    coordinator_.disconnect(endpoints_[endpoint_]);
    const std::string& previous = endpoints_[endpoint_];
    endpoint_ = (endpoint_ + 1) % endpoints_.size();
    log(fmt::format("no answer from {}: trying {}", previous, endpoints_[endpoint_]));
    coordinator_.connect(endpoints_[endpoint_]);
    endpoint_since_ms_ = now;
  }
}

void Relay::answer_heartbeat(const std::string& route) {
  OutgoingMessage reply;
  reply.body().initHeartbeat();
  if (send_message(route, reply)) ++counters_.heartbeats_answered;
}

bool Relay::send_message(const std::string& route, OutgoingMessage& message) {
  const std::vector<std::byte> bytes = message.encode(++next_sequence_);
  try {
    agents_.send(zmq::buffer(route), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    agents_.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    agents_.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::dontwait);
    return true;
  } catch (const zmq::error_t&) {
    ++counters_.dropped;
    return false;
  }
}

void Relay::start_group(std::string_view payload) {
  RelayGroupStart start;
  try {
    start = decode_group_start(std::as_bytes(std::span(payload.data(), payload.size())),
                               static_cast<size_t>(config_.max_message_bytes));
  } catch (const std::exception& error) {
    ++counters_.refused;
    log(fmt::format("a malformed group from the coordinator: {}", error.what()));
    return;
  }
  const GroupId id{start.config.round_id, start.config.group_id};
  if (groups_.count(id)) return;  // a copy
  ActiveGroup& group = groups_[id];
  for (uint32_t u = 0; u < start.members.size(); ++u) {
    group.routes.push_back(start.members[u].route);
    members_[start.members[u].agent_key] = {id, u};  // a member of an older group is in this one now
  }
  const size_t members = start.members.size();
  try {
    group.round = std::make_unique<GroupRound>(
        std::move(start),
        [this, id](uint32_t index, OutgoingMessage& message) { send_message(groups_.at(id).routes.at(index), message); },
        [this](const std::string& line) { log(line); }, steady_ms());
  } catch (const std::exception& error) {
    ++counters_.refused;
    log(fmt::format("round {} group {} refused: {}", id.first, id.second, error.what()));
    groups_.erase(id);
    return;
  }
  log(fmt::format("round {} group {}: secure aggregation of {} members here", id.first, id.second, members));
}

bool Relay::to_group(const std::string& key, const std::string& route, const zmq::message_t& envelope) {
  const Membership membership = members_.at(key);
  ActiveGroup* group = nullptr;
  if (const auto found = groups_.find(membership.group); found != groups_.end() && found->second.round) group = &found->second;
  if (group == nullptr) return false;
  try {
    DecodedEnvelope decoded = decode_envelope(std::span(static_cast<const std::byte*>(envelope.data()), envelope.size()),
                                              static_cast<size_t>(config_.max_message_bytes));
    return reading_message([&] {
      const Body::Reader body = decoded.envelope().getBody();
      if (body.which() == Body::ROUND_LEAVE) group->round->leave(membership.index);  // and forwarded: the coordinator records it
      if (body.which() != Body::SHARE_KEYS && body.which() != Body::MASKED_INPUT && body.which() != Body::SHARE_OPENING &&
          body.which() != Body::UNMASK_SHARES)
        return false;
      if (round_message_id(body) != membership.group.first) return false;  // another round's: the coordinator judges it
      if (capture_) {
        const uint64_t size = envelope.size();
        capture_.write(key.data(), static_cast<std::streamsize>(key.size()));
        capture_.write(reinterpret_cast<const char*>(&size), sizeof(size));
        capture_.write(static_cast<const char*>(envelope.data()), static_cast<std::streamsize>(size));
        capture_.flush();
      }
      const std::string kind = group->round->handle(membership.index, body);
      OutgoingMessage ack;
      ack.body().initRoundAck().setRoundId(membership.group.first);
      ack.body().getRoundAck().setReceived(kind);
      send_message(route, ack);
      return true;
    });
  } catch (const std::exception& error) {
    // A malformed or misplaced stage message: the member is left out of the group (no stage waits for it).
    ++counters_.refused;
    log(fmt::format("round {} group {}: member {} ({}): {}", membership.group.first, membership.group.second, membership.index,
                    key, error.what()));
    group->round->leave(membership.index);
    return true;
  }
}

void Relay::tick_groups(int64_t now) {
  for (auto it = groups_.begin(); it != groups_.end();) {
    if (!it->second.round->tick(now)) {
      ++it;
      continue;
    }
    try {
      const std::vector<std::byte> result = encode_group_result(it->second.round->result());
      send_frames(
          coordinator_,
          {kRelayFrameTag, kRelayGroupResultFrame, std::string_view(reinterpret_cast<const char*>(result.data()), result.size())},
          nullptr);
    } catch (const zmq::error_t&) {
      ++counters_.dropped;
      log(fmt::format("round {} group {}: its result could not be sent to the coordinator", it->first.first, it->first.second));
    }
    for (const RelayGroupMember& member : it->second.round->start().members) {
      const auto found = members_.find(member.agent_key);
      if (found != members_.end() && found->second.group == it->first) members_.erase(found);
    }
    it = groups_.erase(it);
  }
}

void Relay::send_to_agent(const std::string& route, const zmq::message_t& envelope) {
  try {
    send_frames(agents_, {route, kFrameTag}, &envelope);
    ++counters_.forwarded_down;
  } catch (const zmq::error_t&) {
    ++counters_.dropped;  // EHOSTUNREACH: the agent's connection is gone; EAGAIN: it does not read
  }
}

}  // namespace fedcal::relay
