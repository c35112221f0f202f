// Fleet-test helpers for an attacker's hand-driven client: an enrolled ZeroMQ client that sends what
// a real agent never would, a round with such a client beside real agents, and centralized
// calibration with fedcal-model (what an operator runs on one machine).
#pragma once

#include <doctest/doctest.h>

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "common/signing.h"
#include "edge_agent/enrollment.h"
#include "models/quant/calibration_stats.h"
#include "protocol/wire.h"
#include "secagg/crypto.h"
#include "secagg/secagg_wire.h"
#include "secagg/secure_aggregation.h"
#include "tests/coordinator/mini_fleet.h"
#include "transport/curve.h"

namespace fedcal::testing {

inline constexpr int kSequences = kRoundSequences;
inline constexpr int kSeqLen = kRoundSeqLen;

// Centralized calibration of `text` with fedcal-model, as an operator would run it on one machine.
inline std::string calibrate_centrally(const MiniFleet& fleet, const std::string& fp32_package, const std::string& text,
                                       int sequences, const std::string& name, const std::string& extra_options = "") {
  write_text(fleet.path(name + ".txt"), text);
  const std::string stats = fleet.path(name + ".stats");
  const auto result = run_command(built_binary("fedcal-model") + " calibrate --quiet --threads 1 --model " + fp32_package +
                                      " --text " + fleet.path(name + ".txt") + " --sequences " + std::to_string(sequences) +
                                      " --seq-len " + std::to_string(kSeqLen) + " " + extra_options + " -o " + stats,
                                  true);
  REQUIRE_MESSAGE(result.exit_code == 0, result.output);
  return stats;
}

inline std::string fp32_package_path(MiniFleet& fleet, int64_t model) {
  const nlohmann::json models = fleet.admin({{"command", "models.list"}});
  for (const auto& entry : models["models"]) {
    if (entry["id"].get<int64_t>() == model) return entry["path"].get<std::string>();
  }
  FAIL("model not listed");
  return {};
}

// A hand-driven enrolled client, to send what a real agent never would.
class ProbeClient {
 public:
  // `receive_queue` > 0: at most that many messages wait in this client's queue (and a small kernel
  // buffer): a client that does not read then leaves the rest queued at the coordinator.
  // `through_relay`: enrolled and connected through the fleet's relay (FleetOptions::relayed_agents).
  explicit ProbeClient(MiniFleet& fleet, const std::string& name = "probe", int receive_queue = 0, bool through_relay = false)
      : context_(1), socket_(context_, zmq::socket_type::dealer) {
    if (receive_queue > 0) {
      socket_.set(zmq::sockopt::rcvhwm, receive_queue);
      socket_.set(zmq::sockopt::rcvbuf, 64 * 1024);
    }
    const auto status = fleet.admin({{"command", "status"}});
    const std::string token = fleet.admin({{"command", "token.create"}})["token"].get<std::string>();
    const std::string endpoint =
        through_relay ? "tcp://127.0.0.1:" + std::to_string(fleet.relay_port()) : status["listen"].get<std::string>();
    const std::string server_key = through_relay ? fleet.relay_key() : status["curve_public_key"].get<std::string>();
    edge_agent::enroll(fleet.path("probe"), endpoint, server_key, token, name);
    configure_curve_client(socket_, CurveKeyPair::read(fleet.path("probe/curve.key")), server_key, SocketLimits{});
    socket_.connect(endpoint);
  }
  // A client with an existing key pair (an enrolled agent's), enrolling nothing.
  ProbeClient(MiniFleet& fleet, const CurveKeyPair& keys) : context_(1), socket_(context_, zmq::socket_type::dealer) {
    const auto status = fleet.admin({{"command", "status"}});
    configure_curve_client(socket_, keys, status["curve_public_key"], SocketLimits{});
    socket_.connect(status["listen"].get<std::string>());
  }
  void send_raw(std::span<const std::byte> bytes) {
    socket_.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore);
    socket_.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
  }
  // The next message, decoded; nullopt if none came.
  std::optional<DecodedEnvelope> receive(std::chrono::milliseconds timeout) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, timeout);
    if (!(item.revents & ZMQ_POLLIN)) return std::nullopt;
    zmq::message_t tag, payload;
    (void)socket_.recv(tag);
    (void)socket_.recv(payload);
    return decode_envelope(std::span(static_cast<const std::byte*>(payload.data()), payload.size()));
  }
  // The body kind of the reply and, for errors, the code; nullopt if none came.
  std::optional<std::pair<std::string, int>> reply(std::chrono::milliseconds timeout = std::chrono::milliseconds(3000)) {
    const std::optional<DecodedEnvelope> decoded = receive(timeout);
    if (!decoded) return std::nullopt;
    const auto body = decoded->envelope().getBody();
    const int code = body.which() == wire::Envelope::Body::ERROR ? static_cast<int>(body.getError().getCode()) : -1;
    return std::make_pair(body_name(decoded->envelope()), code);
  }
  // While waiting, say heartbeat every 500 ms, as a running agent does, numbering the messages from
  // `*sequence`: a client that waits longer than the coordinator's agent timeout in silence is
  // offline, and a round drops it (which a slow, loaded run made happen).
  void keep_alive(uint64_t* sequence) { keep_alive_sequence_ = sequence; }
  // Reads messages until one of `kind` arrives (returned) or `timeout` passes (nullopt).
  std::optional<DecodedEnvelope> wait_for_message(const std::string& kind,
                                                  std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    auto last_heartbeat = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() < deadline) {
      if (keep_alive_sequence_ != nullptr &&
          std::chrono::steady_clock::now() - last_heartbeat >= std::chrono::milliseconds(500)) {
        OutgoingMessage heartbeat;
        heartbeat.body().initHeartbeat();
        send_raw(heartbeat.encode((*keep_alive_sequence_)++));
        last_heartbeat = std::chrono::steady_clock::now();
      }
      std::optional<DecodedEnvelope> message = receive(std::chrono::milliseconds(500));
      if (message && body_name(message->envelope()) == kind) return message;
    }
    return std::nullopt;
  }
  bool wait_for(const std::string& kind, std::chrono::milliseconds timeout = std::chrono::milliseconds(20000)) {
    return wait_for_message(kind, timeout).has_value();
  }

 private:
  zmq::context_t context_;
  zmq::socket_t socket_;
  uint64_t* keep_alive_sequence_ = nullptr;
};

// A round with a raw client beside the fleet's agents: the client says hello, `online` clients in
// all are online, the project model is imported and a round that takes `max_agents` starts; returns
// once the raw client was announced.
struct RawClientRound {
  int64_t id;
  uint64_t vector_length;  // of the round's contribution vector
  // What an honest participant would contribute: agent 0's calibration text, calibrated centrally
  // before the round starts (afterwards the raw client, silent meanwhile, would be dropped as offline).
  CalibrationStats honest;
};
// `extra`: settings added to the round's.
inline RawClientRound start_round_beside(MiniFleet& fleet, ProbeClient& raw, uint64_t& sequence, size_t online, int max_agents,
                                         const nlohmann::json& extra = nlohmann::json::object()) {
  OutgoingMessage hello;
  hello.body().initHello().setName("raw-client");
  raw.send_raw(hello.encode(sequence++));
  REQUIRE(raw.wait_for("welcome"));
  fleet.start_agents();
  fleet.wait_online(online);
  const int64_t model = fleet.import_model();
  CalibrationStats honest = read_stats(
      calibrate_centrally(fleet, fp32_package_path(fleet, model), fleet.calibration_text(0, kSequences), kSequences, "honest"));
  nlohmann::json settings = round_settings(model);
  settings["max_agents"] = max_agents;
  settings.update(extra);
  const int64_t id = fleet.admin({{"command", "round.start"}, {"settings", settings}})["round"].get<int64_t>();
  REQUIRE(raw.wait_for("roundAnnounce"));
  const uint64_t length = contribution_length(honest);
  return {id, length, std::move(honest)};
}

// The raw client's join of `round` with the given keys.
// `seals`: it says it can seal self-mask shares to the coordinator (what a relay group needs).
inline std::vector<std::byte> join_bytes(const RawClientRound& round, const Key32& cipher, const Key32& mask, bool narrow_lanes,
                                         uint64_t sequence, bool seals = false) {
  OutgoingMessage join;
  auto body = join.body().initJoin();
  body.setRoundId(static_cast<uint64_t>(round.id));
  body.setCipherPublic(as_data(cipher));
  body.setMaskPublic(as_data(mask));
  body.setVectorLength(round.vector_length);
  body.setNarrowLanes(narrow_lanes);
  body.setEphemeralShareKeys(true);
  body.setSealsSelfMaskShares(seals);
  return join.encode(sequence);
}

// `honest_agents` real agents and a raw client in one round that takes `max_agents` (the raw client was
// announced the round); the raw client plays a participant's part by hand.
struct RoundBesideRawClient {
  std::unique_ptr<MiniFleet> fleet;
  std::unique_ptr<ProbeClient> raw;
  uint64_t sequence = uint64_t{1} << 62;
  RawClientRound round{};
  bool relay_group = false;
  uint32_t min_survivors = 3;  // the round's min_agents, as the announcement tells a real agent

  // `extra`: settings added to the round's. With relay_group_size among them, every agent and the raw
  // client connect through the fleet's relay, and the round's secure aggregation runs there in groups.
  explicit RoundBesideRawClient(int max_agents, int honest_agents = 3, const nlohmann::json& extra = nlohmann::json::object())
      : relay_group(extra.contains("relay_group_size")), min_survivors(extra.value("min_agents", 3u)) {
    FleetOptions options;
    options.agents = honest_agents;
    if (relay_group) options.relayed_agents = honest_agents;
    fleet = std::make_unique<MiniFleet>(options);
    fleet->start_coordinator();
    raw = std::make_unique<ProbeClient>(*fleet, "probe", 0, relay_group);
    raw->keep_alive(&sequence);  // a participant that plays its part by hand, but is not silent meanwhile
    round = start_round_beside(*fleet, *raw, sequence, static_cast<size_t>(honest_agents) + 1, max_agents, extra);
  }
  // Joins with `keys` (narrow lanes as asked) and returns the round's keys message for the raw client.
  DecodedEnvelope join(const Key32& cipher, const Key32& mask, bool narrow_lanes = true) {
    raw->send_raw(join_bytes(round, cipher, mask, narrow_lanes, sequence++, relay_group));
    std::optional<DecodedEnvelope> keys = raw->wait_for_message("roundKeys", std::chrono::seconds(60));
    REQUIRE(keys.has_value());
    return std::move(*keys);
  }
  void share_keys(const std::vector<EncryptedShare>& shares, std::optional<Key32> commitment) {
    OutgoingMessage message;
    auto body = message.body().initShareKeys();
    body.setRoundId(static_cast<uint64_t>(round.id));
    write_encrypted_shares(shares, body.initShares(static_cast<unsigned>(shares.size())));
    if (commitment) body.setSelfMaskCommitment(as_data(*commitment));
    raw->send_raw(message.encode(sequence++));
  }
  // Joins as `client`, shares its keys and returns the shares the round then sends it (sharesForYou);
  // the round's configuration goes to `config`.
  std::vector<EncryptedShare> share_and_receive(SecAggClient& client, SecAggConfig& config) {
    const DecodedEnvelope keys = join(client.advertise().cipher_public, client.advertise().mask_public);
    const auto round_keys = keys.envelope().getBody().getRoundKeys();
    config = read_round_keys_config(round_keys, min_survivors);
    const std::vector<EncryptedShare> mine =
        client.share_keys(config, round_keys.getIndex(), read_round_keys_neighbours(round_keys));
    share_keys(mine, client.self_mask_commitment());  // after share_keys: the commitment needs the round
    const std::optional<DecodedEnvelope> delivery = raw->wait_for_message("sharesForYou", std::chrono::seconds(30));
    REQUIRE(delivery.has_value());
    return read_encrypted_shares(delivery->envelope().getBody().getSharesForYou().getShares(), "sharesForYou");
  }
  // Plays a participant's part with the secure-aggregation library (not the agent): joins, shares
  // keys, masks `input` as its contribution and reveals its shares for unmasking (each one wrong, with
  // `wrong_reveals`; not in a relay group).
  void participate(const std::vector<uint64_t>& input, bool wrong_reveals = false) {
    SecAggClient client;
    SecAggConfig config;
    {
      const std::vector<EncryptedShare> shares = share_and_receive(client, config);
      REQUIRE(input.size() == config.vector_length);
      const std::vector<uint64_t> masked = client.mask_input(input, shares);
      OutgoingMessage message;
      auto body = message.body().initMaskedInput();
      body.setRoundId(static_cast<uint64_t>(round.id));
      write_lane_vector(masked, config.lane_bits, body.initValues(static_cast<unsigned>(masked.size() * config.lane_bits / 8)));
      auto with = body.initMaskedWith(static_cast<unsigned>(shares.size()));
      for (size_t i = 0; i < shares.size(); ++i) with.set(static_cast<unsigned>(i), shares[i].from);
      raw->send_raw(message.encode(sequence++));
    }
    const std::optional<DecodedEnvelope> request = raw->wait_for_message("unmaskRequest", std::chrono::seconds(30));
    REQUIRE(request.has_value());
    if (relay_group) {  // the self-mask shares sealed to the coordinator's round key, as an agent seals them
      OutgoingMessage message;
      answer_unmask_request(client, request->envelope().getBody().getUnmaskRequest(),
                            SigningKey::read_public_key(fleet->coordinator_dir() + "/signing.key.pub"),
                            message.body().initUnmaskShares());
      raw->send_raw(message.encode(sequence++));
      return;
    }
    std::vector<uint32_t> survivors;
    for (const uint32_t survivor : request->envelope().getBody().getUnmaskRequest().getSurvivors()) survivors.push_back(survivor);
    std::vector<RevealedShare> revealed = client.unmask(survivors);
    if (wrong_reveals) {
      for (RevealedShare& share : revealed) share.share.value[3] ^= 0x11;
    }
    OutgoingMessage message;
    auto body = message.body().initUnmaskShares();
    body.setRoundId(static_cast<uint64_t>(round.id));
    write_revealed_shares(revealed, body.initShares(static_cast<unsigned>(revealed.size())));
    raw->send_raw(message.encode(sequence++));
  }
  // Plays an honest participant up to its shares, then complains about every share it was sent (each
  // of which decrypts): a false complaint naming every neighbour.
  void complain_falsely_about_every_share() {
    SecAggClient client;
    SecAggConfig config;
    const std::vector<EncryptedShare> shares = share_and_receive(client, config);
    REQUIRE(config.ephemeral_share_keys);
    CHECK(client.undecryptable(shares).empty());  // every one decrypts
    OutgoingMessage complaint;
    auto body = complaint.body().initMaskedInput();
    body.setRoundId(static_cast<uint64_t>(round.id));
    auto named = body.initBadShares(static_cast<unsigned>(shares.size()));
    for (size_t i = 0; i < shares.size(); ++i) named.set(static_cast<unsigned>(i), shares[i].from);
    raw->send_raw(complaint.encode(sequence++));
  }
  // The round's report once it is done (a failed round fails the test).
  nlohmann::json report() {
    const nlohmann::json status = fleet->wait_round(round.id, std::chrono::seconds(90));
    REQUIRE_MESSAGE(status["stage"] == "done", status.dump(2));
    return status;
  }
  bool audited(const std::string& text) {
    return fleet->admin({{"command", "audit"}, {"limit", 100}}).dump().find(text) != std::string::npos;
  }
};

}  // namespace fedcal::testing
