#include "bench/sim_agent.h"

#include <random>

#include "bench/fleet_process.h"
#include "common/error.h"
#include "secagg/secagg_wire.h"

namespace fedcal::bench {

using Body = wire::Envelope::Body;

SimAgent::SimAgent(zmq::context_t& context, const std::string& endpoint, const std::string& coordinator_key,
                   const std::string& source_address, const std::vector<uint64_t>& vector, int transport_ping_ms)
    : transport_ping_ms_(transport_ping_ms),
      keys_(CurveKeyPair::generate()),
      socket_(context, zmq::socket_type::dealer),
      endpoint_(endpoint),
      coordinator_key_(coordinator_key),
      source_address_(source_address),
      vector_(vector),
      sequence_(static_cast<uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count())) {}

int SimAgent::fd() const { return socket_.get(zmq::sockopt::fd); }

void SimAgent::enroll(const std::string& token) {
  // The real agent's options, with transport_ttl = false (a fleet of thousands: transport/curve.h) and
  // its transport_ping_ms.
  SocketLimits limits;
  limits.heartbeat_ttl = false;
  limits.heartbeat_interval_ms = transport_ping_ms_;
  limits.heartbeat_timeout_ms = transport_ping_ms_ > 0 ? transport_timeout_for(transport_ping_ms_) : 0;
  configure_curve_client(socket_, keys_, coordinator_key_, limits);
  // "tcp://SOURCE:0;HOST:PORT": libzmq binds the connection's local end to SOURCE first.
  // Without one, the kernel picks the source port per destination (no bind to port 0 first).
  socket_.connect(source_address_.empty() ? endpoint_
                                          : "tcp://" + source_address_ + ":0;" + endpoint_.substr(endpoint_.find("://") + 3));
  OutgoingMessage message;
  auto request = message.body().initEnroll();
  request.setToken(token);
  request.setName("sim");
  send(message);
  state_ = State::kEnrolling;
}

void SimAgent::send(OutgoingMessage& message) {
  const auto bytes = message.encode(++sequence_);
  bytes_sent += bytes.size();
  socket_.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
}

void SimAgent::heartbeat(SimClock::time_point now, bool record) {
  OutgoingMessage message;
  message.body().initHeartbeat();
  heartbeat_sent_ = now;
  heartbeat_outstanding_ = record;
  heartbeats_recorded += record ? 1 : 0;
  next_heartbeat_ = now + std::chrono::milliseconds(heartbeat_interval_ms_);
  send(message);
}

int SimAgent::drain() {
  int handled = 0;
  while (true) {
    zmq::message_t tag, payload;
    if (!socket_.recv(tag, zmq::recv_flags::dontwait)) return handled;
    if (!tag.more() || !socket_.recv(payload, zmq::recv_flags::dontwait)) continue;
    ++handled;
    bytes_received += payload.size();
    try {
      DecodedEnvelope decoded = decode_envelope(std::span(static_cast<const std::byte*>(payload.data()), payload.size()));
      handle(decoded.envelope());
    } catch (const std::exception& error) {
      state_ = State::kFailed;
      failure_ = error.what();
    }
  }
}

void SimAgent::handle(wire::Envelope::Reader envelope) {
  const auto body = envelope.getBody();
  const double cpu_before = thread_cpu_seconds();
  switch (body.which()) {
    case Body::ERROR:
      if (state_ == State::kEnrolling || state_ == State::kGreeting) {
        state_ = State::kFailed;
        failure_ = body.getError().getMessage().cStr();
      }
      return;
    case Body::ENROLLED: {
      OutgoingMessage hello;
      hello.body().initHello().setName("sim");
      send(hello);
      state_ = State::kGreeting;
      return;
    }
    case Body::WELCOME: {
      const auto signing_key = body.getWelcome().getSigningKey();
      coordinator_signing_key_ = std::make_unique<SigningKey>(
          SigningKey::from_public_bytes(std::span(reinterpret_cast<const uint8_t*>(signing_key.begin()), signing_key.size())));
      heartbeat_interval_ms_ = static_cast<int>(body.getWelcome().getHeartbeatIntervalMs());
      if (heartbeat_interval_ms_ <= 0) heartbeat_interval_ms_ = 2000;
      // The first heartbeat somewhere within one period: the fleet's heartbeats spread out.
      thread_local std::mt19937 random(std::random_device{}());
      next_heartbeat_ =
          SimClock::now() + std::chrono::milliseconds(std::uniform_int_distribution<int>(0, heartbeat_interval_ms_)(random));
      state_ = State::kOnline;
      return;
    }
    case Body::HEARTBEAT:
      if (heartbeat_outstanding_) {
        heartbeat_latencies_ms.push_back(
            static_cast<float>(std::chrono::duration<double, std::milli>(SimClock::now() - heartbeat_sent_).count()));
        heartbeat_outstanding_ = false;
      }
      return;
    case Body::ROUND_ANNOUNCE: {
      round_ = body.getRoundAnnounce().getConfig().getRoundId();
      min_survivors_ = body.getRoundAnnounce().getConfig().getMinSurvivors();
      reported_ = false;
      unmasked_ = false;
      client_ = std::make_unique<SecAggClient>();
      OutgoingMessage message;
      auto join = message.body().initJoin();
      join.setRoundId(round_);
      join.setCipherPublic(as_data(client_->advertise().cipher_public));
      join.setMaskPublic(as_data(client_->advertise().mask_public));
      join.setVectorLength(vector_.size());
      join.setNarrowLanes(true);
      join.setEphemeralShareKeys(true);
      join.setNeighbourSurvivors(true);
      join.setSealsSelfMaskShares(true);
      send(message);
      break;
    }
    case Body::ROUND_KEYS: {
      if (!client_) return;
      const auto keys = body.getRoundKeys();
      const SecAggConfig config = read_round_keys_config(keys, min_survivors_);
      const auto shares = client_->share_keys(config, keys.getIndex(), read_round_keys_neighbours(keys));
      OutgoingMessage message;
      auto out = message.body().initShareKeys();
      out.setRoundId(round_);
      write_encrypted_shares(shares, out.initShares(static_cast<unsigned>(shares.size())));
      out.setSelfMaskCommitment(as_data(client_->self_mask_commitment()));
      send(message);
      break;
    }
    case Body::SHARES_FOR_YOU: {
      if (!client_) return;
      const std::vector<EncryptedShare> shares = read_encrypted_shares(body.getSharesForYou().getShares(), "sharesForYou");
      const auto masked = client_->mask_input(vector_, shares);
      OutgoingMessage message;
      auto out = message.body().initMaskedInput();
      out.setRoundId(round_);
      const uint32_t lane_bits = client_->config().lane_bits;
      write_lane_vector(masked, lane_bits, out.initValues(static_cast<unsigned>(masked.size() * lane_bits / 8)));
      auto with = out.initMaskedWith(static_cast<unsigned>(shares.size()));
      for (size_t i = 0; i < shares.size(); ++i) with.set(static_cast<unsigned>(i), shares[i].from);
      send(message);
      break;
    }
    case Body::UNMASK_REQUEST: {
      if (!client_ || !coordinator_signing_key_) return;
      OutgoingMessage message;
      answer_unmask_request(*client_, body.getUnmaskRequest(), *coordinator_signing_key_, message.body().initUnmaskShares());
      send(message);
      client_.reset();
      unmasked_ = true;
      break;
    }
    case Body::ROUND_RESULT: {
      OutgoingMessage message;
      auto report = message.body().initLocalReport();
      report.setRoundId(round_);
      report.setError("simulated agent: no local check");
      send(message);
      reported_ = true;
      return;
    }
    default:
      return;
  }
  secagg_cpu_seconds += thread_cpu_seconds() - cpu_before;
}

}  // namespace fedcal::bench
