// One simulated edge agent for fedcal-sim-fleet: its own CURVE key pair and DEALER socket (the real
// agent's socket options, a loopback source address of its own choosing), the real protocol and the
// real secure-aggregation client, a statistics vector handed to it instead of a model run. It never
// blocks: a SimFleetThread drives thousands of them from one thread (sim_fleet_thread.h).
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common/signing.h"
#include "protocol/wire.h"
#include "secagg/secure_aggregation.h"
#include "transport/curve.h"

namespace fedcal::bench {

using SimClock = std::chrono::steady_clock;

class SimAgent {
 public:
  enum class State { kNew, kEnrolling, kGreeting, kOnline, kFailed };

  // `source_address`: the loopback address its connection comes from (e.g. 127.0.0.7), so that no
  // per-address connection limit of the coordinator bites ("": the kernel's choice); `vector`: what it contributes to rounds
  // (outlives the agent).
  SimAgent(zmq::context_t& context, const std::string& endpoint, const std::string& coordinator_key,
           const std::string& source_address, const std::vector<uint64_t>& vector, int transport_ping_ms = 1000);

  // Connects and sends the enrollment (then the hello when it is enrolled).
  void enroll(const std::string& token);
  // Handles every message waiting on the socket, never blocking; returns how many there were.
  int drain();
  // Sends a heartbeat and schedules the next one; with `record`, it is counted and its reply's
  // latency recorded.
  void heartbeat(SimClock::time_point now, bool record);

  State state() const { return state_; }
  const std::string& failure() const { return failure_; }  // once its thread stopped
  zmq::socket_t& socket() { return socket_; }              // for zmq::poll by a caller with one agent
  int fd() const;  // ZMQ_FD: readable when the socket may have messages (edge-like: drain() after)
  SimClock::time_point next_heartbeat() const { return next_heartbeat_; }
  int heartbeat_interval_ms() const { return heartbeat_interval_ms_; }
  uint64_t round() const { return round_; }
  bool reported() const { return reported_; }
  bool unmasked() const { return unmasked_; }  // answered the last round's unmask request

  // Measurements, read by the owning thread (or after it stopped).
  std::vector<float> heartbeat_latencies_ms;
  uint64_t heartbeats_recorded = 0;
  uint64_t bytes_sent = 0, bytes_received = 0;
  double secagg_cpu_seconds = 0;  // keys, shares, masking, unmasking and their encoding

 private:
  void send(OutgoingMessage& message);
  void handle(wire::Envelope::Reader envelope);

  int transport_ping_ms_;
  CurveKeyPair keys_;
  zmq::socket_t socket_;
  std::string endpoint_, coordinator_key_, source_address_;
  const std::vector<uint64_t>& vector_;
  std::atomic<State> state_{State::kNew};  // read by other threads (progress counts)
  std::string failure_;
  uint64_t sequence_;
  int heartbeat_interval_ms_ = 2000;
  SimClock::time_point next_heartbeat_{};
  SimClock::time_point heartbeat_sent_{};
  bool heartbeat_outstanding_ = false;  // a recorded heartbeat awaits its reply
  uint64_t round_ = 0;
  uint32_t min_survivors_ = 3;
  bool reported_ = false;
  bool unmasked_ = false;
  std::unique_ptr<SecAggClient> client_;
  std::unique_ptr<SigningKey> coordinator_signing_key_;  // from the welcome: checks a relay group's round key
};

}  // namespace fedcal::bench
