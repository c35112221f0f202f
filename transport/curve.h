// ZeroMQ CURVE key pairs (Z85 text) and the socket options every fedcal socket gets: CURVE, a message
// size cap, ZMTP heartbeats, reconnect backoff, and on the coordinator's ROUTER: ZAP with an enforced
// domain (without a ZAP handler libzmq would accept any CURVE client: encryption without
// authentication) and ROUTER_MANDATORY (unroutable messages fail instead of vanishing).
#pragma once

#include <zmq.hpp>

#include <cerrno>
#include <chrono>
#include <string>
#include <vector>

namespace fedcal {

struct CurveKeyPair {
  std::string public_key;  // Z85, 40 characters
  std::string secret_key;  // Z85, 40 characters

  static CurveKeyPair generate();
  // Key file: "public <z85>\nsecret <z85>\n", mode 0600. Throws Error naming the file.
  static CurveKeyPair read(const std::string& path);
  void write(const std::string& path) const;
  // Reads `path`, or creates it with a fresh pair if it does not exist.
  static CurveKeyPair read_or_create(const std::string& path);
};

// Throws Error unless `key` is a 40-character Z85 CURVE key; `what` names it.
void check_curve_key(const std::string& key, const std::string& what);

struct SocketLimits {
  int64_t max_message_bytes = int64_t{64} << 20;
  // ZMTP heartbeats: this end pings every heartbeat_interval_ms (0: never) and closes a connection
  // that stays silent heartbeat_timeout_ms after a ping; with heartbeat_ttl its pings also ask the
  // peer to close the connection after heartbeat_timeout_ms without traffic from this end.
  // libzmq keeps an I/O thread's timers in a map whose cancel is a linear search, and a ping's timeout
  // (or a TTL) is cancelled by the next message: with N connections on one socket that is O(N) per
  // message (at 5,000 agents 75% of a coordinator's CPU, and enrollment stalled). Fleets of thousands
  // turn both off (the coordinator's transport_pings, the agents' transport_ttl) and rely on TCP
  // keepalive; the defaults keep them (a coordinator pause test loses an agent for 25 s without them).
  int heartbeat_interval_ms = 1000;
  int heartbeat_timeout_ms = 5000;
  bool heartbeat_ttl = true;
  // TCP keepalive probes after this many idle seconds, then every 5 s, 3 unanswered: the connection
  // is closed (0: the system default, which is off). Costs the kernel's timers, not libzmq's.
  int tcp_keepalive_idle_s = 0;
  int reconnect_interval_max_ms = 10000;
  // A connection that has not finished its CURVE handshake by then is closed (ZMQ_HANDSHAKE_IVL): an
  // idle plain-TCP connection holds a file descriptor this long at most.
  int handshake_timeout_ms = 10000;
};

// The timeout (and TTL) of transport pings sent every `ping_ms`: at least twice the period (a TTL
// shorter than the period would close an idle connection between pings), at least 5 s.
inline int transport_timeout_for(int ping_ms) { return ping_ms > 2500 ? 2 * ping_ms : 5000; }

void configure_curve_server(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& zap_domain,
                            const SocketLimits& limits);
void configure_curve_client(zmq::socket_t& socket, const CurveKeyPair& keys, const std::string& server_public_key,
                            const SocketLimits& limits);

// zmq::poll that returns false when a signal interrupted it (the caller then checks its stop flag).
inline bool poll_interruptible(zmq::pollitem_t* items, size_t count, std::chrono::milliseconds timeout) {
  try {
    zmq::poll(items, count, timeout);
    return true;
  } catch (const zmq::error_t& error) {
    if (error.num() == EINTR) return false;
    throw;
  }
}

// Every frame of the next multipart message (empty if none is waiting).
inline std::vector<zmq::message_t> receive_multipart(zmq::socket_t& socket) {
  std::vector<zmq::message_t> frames;
  do {
    zmq::message_t frame;
    if (!socket.recv(frame, zmq::recv_flags::dontwait)) break;
    frames.push_back(std::move(frame));
  } while (frames.back().more());
  return frames;
}

inline constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";

}  // namespace fedcal
