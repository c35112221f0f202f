// The relay's configuration file (TOML; deploy/relay.toml documents every key).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fedcal::relay {

struct RelayConfig {
  std::string listen = "tcp://127.0.0.1:7710";      // agents connect here (CURVE, the relay's own key)
  std::string coordinator;                          // the coordinator's relay_listen (tcp://HOST:PORT)
  std::vector<std::string> standby_coordinators;    // tried in turn when the coordinator stays silent
  std::string coordinator_key;                      // its CURVE public key
  std::string state_dir = "/var/lib/fedcal-relay";  // the relay's CURVE key pair
  // Who the relay heard from goes to the coordinator this often; it must stay well below the
  // coordinator's agent_timeout_ms.
  int presence_interval_ms = 1000;
  // The coordinator silent this long: heartbeats are no longer answered here (agents then see the
  // silence as they would on a direct connection), and the next standby coordinator is tried.
  int coordinator_timeout_ms = 10000;
  int max_connections_per_address = 1024;  // agent connections open from one IP address
  int handshake_timeout_ms = 10000;        // a connection must finish its CURVE handshake this fast
  int64_t max_message_bytes = int64_t{64} << 20;
  // ZMTP pings on agent connections (transport/curve.h: O(connections) per message in libzmq): off
  // for thousands of agents, TCP keepalive finds vanished boards instead.
  bool transport_pings = true;
  // Optional (audits, tests): every stage message the relay's groups take, as [key][length u64][bytes].
  std::string capture_file;

  // Reads `path`; errors name the file and key. Relative paths in the file are relative to it.
  static RelayConfig load(const std::string& path);
  std::string curve_key_path() const { return state_dir + "/curve.key"; }
};

}  // namespace fedcal::relay
