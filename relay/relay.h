// fedcal-relay: a daemon edge agents connect to instead of the coordinator, so that one coordinator
// serves fleets past what its own connections and heartbeats allow. Agents use it as their
// `coordinator` (with the relay's CURVE key); the relay holds one CURVE connection to the
// coordinator's relay_listen and forwards every agent message there unchanged, with the agent's key
// and address (protocol/relay_frames.h), and every answer back to the agent's connection. Heartbeats
// of agents the coordinator welcomed are answered here, and who was heard goes to the coordinator
// once per presence interval instead: thousands of heartbeats a second become one message.
// The relay is trusted to name the agents behind its messages (the coordinator accepts only keys in
// its `relays`), but holds no secret of theirs: the envelopes are the agents' own, packages stay
// signed by the coordinator, and secure aggregation runs between the agents and the coordinator as
// on a direct connection - or, in a round with relay groups, here per group with the self-mask
// shares sealed to the coordinator (group_round.h) - (docs/ARCHITECTURE.md, threat model).
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <fstream>
#include <map>
#include <memory>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "protocol/relay_frames.h"
#include "protocol/wire.h"
#include "relay/group_round.h"
#include "relay/relay_config.h"
#include "transport/connection_guard.h"
#include "transport/curve.h"

namespace fedcal::relay {

inline constexpr const char* kRelayAgentsZapDomain = "fedcal";

class Relay {
 public:
  // Reads (creating on first start) the key pair, binds the agents' socket, connects to the coordinator.
  explicit Relay(RelayConfig config);
  // Serves until `stop` becomes true (signal handler).
  void run(const std::atomic<bool>& stop);
  const std::string& public_key() const { return keys_.public_key; }

  struct Counters {
    uint64_t forwarded_up = 0;         // agents' messages forwarded to the coordinator
    uint64_t forwarded_down = 0;       // the coordinator's messages forwarded to agents
    uint64_t heartbeats_answered = 0;  // answered here
    uint64_t presence_sent = 0;        // presence reports to the coordinator
    uint64_t dropped = 0;              // not delivered (the agent gone or not reading, the coordinator's queue full)
    uint64_t refused = 0;              // malformed frames from either side
  };
  const Counters& counters() const { return counters_; }

 private:
  void handle_zap();
  void from_agent();
  void from_coordinator();
  // Heard from agents since the last report, to the coordinator (also as a keepalive when empty).
  void send_presence(int64_t now);
  // The coordinator silent for coordinator_timeout_ms: heartbeats go through again, and the next
  // coordinator endpoint is tried.
  void coordinator_silent(int64_t now);
  void answer_heartbeat(const std::string& route);
  // The relay's own message to an agent (a heartbeat answer, a relay group's requests).
  bool send_message(const std::string& route, OutgoingMessage& message);  // false: not delivered (counted)
  // Secure aggregation per group (group_round.h): a group the coordinator sent, a member's stage
  // message (true: taken here), the groups' deadlines and their results up to the coordinator.
  void start_group(std::string_view payload);
  bool to_group(const std::string& key, const std::string& route, const zmq::message_t& envelope);
  void tick_groups(int64_t now);
  void send_to_agent(const std::string& route, const zmq::message_t& envelope);
  void log(const std::string& line);
  bool coordinator_alive(int64_t now) const { return now - last_coordinator_ms_ < config_.coordinator_timeout_ms; }

  RelayConfig config_;
  CurveKeyPair keys_;
  zmq::context_t context_;
  zmq::socket_t zap_;
  zmq::socket_t agents_;
  zmq::socket_t coordinator_;
  std::unique_ptr<ConnectionGuard> connection_guard_;
  std::vector<std::string> endpoints_;  // coordinator, then standby_coordinators
  size_t endpoint_ = 0;
  int64_t endpoint_since_ms_ = 0;
  int64_t last_coordinator_ms_ = -1000000000;  // monotonic; never heard at the start
  int64_t last_presence_ms_ = 0;
  int64_t last_report_ms_ = 0;
  uint64_t next_sequence_ = 0;  // the relay's own messages to agents (heartbeat answers)
  // Agents the coordinator welcomed (its welcome passed through here) and not cut since: their
  // heartbeats are answered here. By CURVE key.
  std::unordered_set<std::string> welcomed_;
  std::vector<PresenceEntry> heard_;            // since the last presence report
  std::unordered_set<std::string> heard_keys_;  // the keys in heard_
  Counters counters_;
  using GroupId = std::pair<uint64_t, uint64_t>;  // round, group
  struct ActiveGroup {
    std::vector<std::string> routes;  // each member's route here, by index (updated as it reconnects)
    std::unique_ptr<GroupRound> round;
  };
  std::map<GroupId, ActiveGroup> groups_;
  struct Membership {
    GroupId group;
    uint32_t index = 0;
  };
  std::unordered_map<std::string, Membership> members_;  // by agent key: its group now
  std::ofstream capture_;                                // config_.capture_file, when set
};

}  // namespace fedcal::relay
