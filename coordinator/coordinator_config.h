// The coordinator's configuration file (TOML; deploy/coordinator.toml documents every key).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace fedcal::coordinator {

struct CoordinatorConfig {
  std::string listen = "tcp://127.0.0.1:7700";  // agents connect here (CURVE)
  std::string state_dir = "/var/lib/fedcal";    // database, keys, artifacts, admin access
  int heartbeat_interval_ms = 2000;             // agents heartbeat this often
  // ZMTP pings to each agent connection every heartbeat_interval_ms (silent ones closed after
  // agent_timeout_ms). false for fleets of thousands: libzmq's cost is O(connections) per message
  // (transport/curve.h); TCP keepalive finds vanished boards instead.
  bool transport_pings = true;
  int agent_timeout_ms = 10000;                 // silent this long: offline (dropped from a round stage)
  int stage_timeout_ms = 60000;                 // a secure-aggregation stage waits at most this long
  int join_timeout_ms = 600000;                 // agents have this long to download, calibrate and join
  // Once min_agents have joined, the others get as long again as that took, and at least this long.
  int join_grace_ms = 10000;
  int report_timeout_ms = 600000;               // and this long to check the result and report
  int64_t max_message_bytes = int64_t{64} << 20;
  int chunk_bytes = 1 << 20;   // model download chunk size
  int token_valid_hours = 24;  // enrollment tokens expire
  std::string reference_text;  // optional public text: the report compares against it
  int threads = 1;             // quantization and reference calibration
  // Floods: per source (CURVE key, peer address) at most `refusals_per_window` refused messages,
  // refused connections or failed enrollments per `rate_window_ms` are answered, logged and audited
  // one by one; the rest are counted and summed up once per window.
  int refusals_per_window = 20;
  int rate_window_ms = 60000;
  int max_connections_per_address = 1024;  // agent connections open from one IP address
  int handshake_timeout_ms = 10000;        // a connection must finish its CURVE handshake this fast
  int audit_max_entries = 200000;          // older audit entries are deleted beyond this
  int backup_interval_hours = 24;          // a consistent copy of the database in STATE/backups this often (0: never)
  int backup_keep = 7;                     // scheduled backups kept (older ones are deleted)
  int round_stats_keep = 50;               // rounds whose aggregate statistics stay (older ones are deleted); 0: all
  std::string capture_file;                // optional: record every aggregation message received (audits, tests)
  std::string metrics_listen;              // optional: HOST:PORT of the Prometheus endpoint (GET /metrics)
  // optional: the database in PostgreSQL (postgresql://...) instead of SQLite in state_dir
  std::string database_url;
  // optional: http://HOST:PORT/PATH/ where agents fetch packages by SHA-256 (an nginx origin or cache
  // in front of the artifact store, deploy/nginx/); told to agents in the welcome
  std::string package_url;
  // CURVE public keys of the relays (fedcal-relay) agents may connect through: a relay is trusted to
  // name the agent behind each message it forwards, and answers the heartbeats of agents welcomed here.
  std::vector<std::string> relays;
  std::string relay_listen;
  // optional: the artifact store elsewhere than STATE/artifacts, e.g. shared storage mounted at the
  // same path on a leader and its standbys (the database names artifacts by absolute path)
  std::string artifacts;  // where the relays connect (CURVE, the coordinator's key); needed with `relays`
  // Tests only: "throw-on-agent-error" makes the handler of an agent's `error` message throw a
  // non-fedcal exception (std::logic_error), to prove the daemon's boundary holds;
  // "kill-entering:quantizing" / "kill-entering:evaluating" / "kill-entering:done" SIGKILL the daemon as
  // a round enters that stage, "kill-soaking" as a rollout's wave starts its soak (crash tests). Empty: off.
  std::string fault_injection;
  // Not in the file: `serve --new-database` (start an empty registry beside keys of an earlier start).
  bool allow_new_database = false;

  // Reads `path`; errors name the file and key. Relative paths in the file are relative to it.
  static CoordinatorConfig load(const std::string& path);
  bool uses_postgres() const { return !database_url.empty(); }
  // SQLite's file (also where its ledger and restore marker sit beside it).
  std::string database_path() const { return state_dir + "/coordinator.db"; }
  // What messages call the database: the SQLite file, or the url without its password.
  std::string database_name() const;
  // The ledger of ids and revocations (store.h) and the marker `db restore` leaves (server.cpp).
  std::string ledger_path() const { return uses_postgres() ? state_dir + "/postgresql.ledger" : database_path() + ".ledger"; }
  std::string restored_marker_path() const {
    return uses_postgres() ? state_dir + "/postgresql.restored" : database_path() + ".restored";
  }
  std::string curve_key_path() const { return state_dir + "/curve.key"; }
  std::string signing_key_path() const { return state_dir + "/signing.key"; }
  std::string artifacts_dir() const { return artifacts.empty() ? state_dir + "/artifacts" : artifacts; }
};

}  // namespace fedcal::coordinator
