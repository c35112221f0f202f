// Real fedcal-coordinator (and fedcal-relay) processes for the fleet benchmarks: started from the build's bin/ folder in
// a scratch folder, reached through its admin socket, stopped at the end; and the CPU time a process
// has used (to report the coordinator's work per agent).
#pragma once

#include <sys/types.h>

#include <string>

namespace fedcal::bench {

struct CoordinatorProcess {
  std::string root;             // the scratch folder: coordinator.toml, coordinator.log, state/
  std::string endpoint;         // tcp://127.0.0.1:PORT, where agents connect
  std::string coordinator_key;  // its CURVE public key
  std::string admin;            // its state folder (the admin client finds the admin socket there)
  pid_t pid = -1;
};

// Starts the coordinator with the benchmarks' settings plus `extra_config` (TOML lines, which may
// repeat none of the keys set here: listen, state_dir, stage_timeout_ms, join_timeout_ms) and waits
// until it answers. Throws Error naming the log when it does not start.
CoordinatorProcess start_coordinator(const std::string& root, const std::string& extra_config);
// SIGTERM, then waits for it to exit.
void stop_coordinator(CoordinatorProcess& process);

struct RelayProcess {
  std::string endpoint;    // tcp://127.0.0.1:PORT, where its agents connect
  std::string public_key;  // its CURVE public key (agents' coordinator_key, the coordinator's relays)
  pid_t pid = -1;
};
// A fresh relay key pair in ROOT/relay-INDEX/curve.key (before the coordinator starts: it lists the key).
std::string create_relay_key(const std::string& root, int index);
// Starts fedcal-relay INDEX (its key made by create_relay_key) on `port`, forwarding to
// `coordinator_relay_endpoint` (the coordinator's relay_listen) with `coordinator_key`; pings off, as
// for fleets of thousands, and no limit per address. Its log is ROOT/relay-INDEX.log.
RelayProcess start_relay(const std::string& root, int index, int port, const std::string& coordinator_relay_endpoint,
                         const std::string& coordinator_key);
void stop_relay(RelayProcess& process);

// User + system CPU seconds process `pid` has used so far (from /proc/PID/stat).
double process_cpu_seconds(pid_t pid);
// This thread's CPU seconds so far.
double thread_cpu_seconds();
// The folder this program was started from (the build's bin/).
std::string program_dir();

}  // namespace fedcal::bench
