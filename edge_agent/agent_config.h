// The agent's configuration file (TOML; deploy/agent.toml documents every key).
#pragma once

#include <string>
#include <vector>

#include "transport/curve.h"

namespace fedcal::edge_agent {

struct AgentConfig {
  std::string coordinator = "tcp://127.0.0.1:7700";     // the coordinator's endpoint
  // Standby coordinators on the same database (same keys): after coordinator_timeout_ms without a
  // word, the agent tries the next endpoint of coordinator + these, in turn.
  std::vector<std::string> standby_coordinators;
  // The agent's ZMTP pings ask the coordinator to close the connection after 5 s without traffic
  // (a TTL). false in fleets of thousands (with the coordinator's transport_pings = false):
  // transport/curve.h.
  bool transport_ttl = true;
  // How often the agent's transport pings its coordinator or relay (ZMTP PING, answered by a PONG: a
  // CURVE message each way). 1 s finds a vanished coordinator fast; at tens of thousands of agents per
  // relay the pings are most of the relay's work (a 100,000-agent simulation on 2 cores saturated at
  // ~21,000 online, pinging each second), so large fleets ping every 10 s or more. The ping timeout
  // (and TTL) is at least twice this (transport_timeout_ms).
  int transport_ping_ms = 1000;
  int transport_timeout_ms() const { return transport_timeout_for(transport_ping_ms); }
  std::string coordinator_key;                          // its CURVE public key (Z85, `fedcal-coordinator keys`)
  std::string state_dir = "/var/lib/fedcal-agent";      // keys, enrollment, downloaded models
  std::string data_dir = "/var/lib/fedcal-agent/text";  // private text: every *.txt file, one document per line
  std::string name;                                     // default: the host name
  std::vector<std::string> labels;                      // device groups ("pi4", "jetson-nano", "x86")
  int threads = 0;                                      // inference threads; 0: by model size (default_threads)
  double heldout_fraction = 0.1;                        // the last lines of the text, kept for local checks
  int eval_max_tokens = 4096;                           // held-out tokens scored per check, at most
  int decode_tokens = 16;                               // tokens decoded per timed run of decoding speed
  int decode_runs = 5;                                  // timed runs per model; the median is reported
  int reconnect_interval_max_ms = 10000;
  // http://HOST:PORT/PATH/ of a package cache near this device (deploy/nginx/); "" : the url the
  // coordinator's welcome gives, if any, else chunks from the coordinator
  std::string package_url;
  int coordinator_timeout_ms = 15000;  // no word from the coordinator this long: reconnect
  int partial_download_max_age_hours = 24;  // older *.part downloads are removed at start
  int disk_budget_mb = 0;  // models + downloads at most this much (least recently used packages go first); 0: the disk
  std::string enroll_token;            // `run` enrolls with it first if not enrolled yet
  int serve_port = 0;  // the local serving socket's port on 127.0.0.1; 0: a free one (serve.json says which)
  // Testing only: "exit-after-join", "exit-after-shares" or "exit-after-masked-input" makes the
  // agent die (_exit, no goodbye) right after sending that message, as a crashed device would;
  // "exit-after-checks" makes it die after checking a round's packages, before reporting;
  // "exit-after-activation" kills it (SIGKILL) right after it switched to a rolled-out model.
  std::string fault_injection;

  static AgentConfig load(const std::string& path);
  std::string curve_key_path() const { return state_dir + "/curve.key"; }
  std::string enrollment_path() const { return state_dir + "/enrollment.json"; }
  std::string models_dir() const { return state_dir + "/models"; }
  std::string downloads_dir() const { return state_dir + "/downloads"; }
  // The local serving socket's access file (edge_agent/local_server.h).
  std::string serve_access_path() const { return state_dir + "/serve.json"; }
};

}  // namespace fedcal::edge_agent
