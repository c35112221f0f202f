// A mini fleet for integration tests: a real fedcal-coordinator process and N real fedcal-agent
// processes on loopback, each agent with its own shard of the TinyStories training split.
#pragma once

#include <sys/types.h>
#include <nlohmann/json.hpp>

#include <chrono>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tests/test_support.h"

namespace fedcal::testing {

// A child process (posix_spawn); killed with SIGKILL when the object dies.
class Process {
 public:
  Process(const std::vector<std::string>& argv, const std::string& log_path);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;
  void signal(int signal_number);
  // The exit code (or 128 + signal) once the process has ended, waiting up to `timeout`.
  std::optional<int> wait_exit(std::chrono::milliseconds timeout);
  bool running();
  pid_t pid() const { return pid_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> exit_code_;
};

struct FleetOptions {
  int agents = 4;
  int lines_per_agent = 16;  // non-empty training lines per agent (private text)
  double heldout_fraction = 0.25;
  bool reference_text = false;  // give the coordinator public text (training lines no agent holds)
  bool capture = false;         // record every aggregation message the coordinator (and the relay) receives
  int agent_timeout_ms = 1500;
  int agent_coordinator_timeout_ms = 3000;  // the agents' coordinator_timeout_ms (silence before they say hello again)
  int stage_timeout_ms = 20000;
  // Tests drive slow participants by hand (raw clients, qemu): all announced agents are waited for
  // up to the join timeout unless a test asks for less.
  int join_grace_ms = 60000;
  int64_t max_message_bytes = 0;            // 0: the coordinator's default
  int chunk_bytes = 0;                      // 0: the coordinator's default
  std::string coordinator_fault_injection;  // the coordinator's fault_injection setting
  std::string coordinator_extra;            // appended to coordinator.toml
  int coordinator_file_limit = 0;           // RLIMIT_NOFILE of the coordinator process; 0: inherited
  std::vector<std::string> coordinator_launcher;  // prepended to its command line (e.g. env with libfaketime)
  // Agents 0..relayed_agents-1 connect through one fedcal-relay (relay/), started with the coordinator.
  int relayed_agents = 0;
  std::string other_relay_key;  // with relayed_agents: a second relay key the coordinator accepts (none runs)
};

class MiniFleet {
 public:
  explicit MiniFleet(FleetOptions options);
  ~MiniFleet();

  void start_coordinator();
  void kill_coordinator();  // SIGKILL: no chance to clean up
  // The coordinator's fault_injection setting from its next start on ("": none).
  void set_coordinator_fault_injection(std::string fault) { options_.coordinator_fault_injection = std::move(fault); }
  Process& coordinator() { return *coordinator_; }
  Process& relay() { return *relay_; }
  // One admin request; `timeout_ms` for the reply (an import of a large model takes seconds).
  nlohmann::json admin(const nlohmann::json& request, int timeout_ms = 5000);

  // Writes agent i's config and private text and enrolls it through `run` with a fresh token.
  // `extra` is appended to its TOML config.
  // `extra`: lines appended to its agent.toml (eval_max_tokens there replaces the default 256).
  // `launcher` runs the agent binary (e.g. under qemu); empty: build/bin/fedcal-agent.
  void start_agent(int i, const std::string& extra = "", const std::vector<std::string>& launcher = {});
  Process& agent(int i) { return *agents_.at(i); }
  // The registry id of agent i (ids follow the order agents enrolled in, not the order they started).
  int64_t agent_id(int i);
  void start_agents();
  // Waits until `count` agents are online.
  void wait_online(size_t count, std::chrono::seconds timeout = std::chrono::seconds(30));

  int64_t import_model();  // the project's model
  // A model file or folder (its tokenizer inside, or `tokenizer`); returns its id.
  int64_t import_model(const std::string& path, const std::string& tokenizer = "");
  // Starts a round with `settings` (model_id filled in) and waits for done/failed.
  nlohmann::json run_round(nlohmann::json settings, std::chrono::seconds timeout = std::chrono::seconds(120));
  nlohmann::json wait_round(int64_t id, std::chrono::seconds timeout);
  // Starts a rollout with `settings` and returns its status once it is no longer running.
  nlohmann::json run_rollout(nlohmann::json settings, std::chrono::seconds timeout = std::chrono::seconds(90));

  // Agent i's private lines (all) and the ones it calibrates on (the first `sequences` of its
  // calibration part).
  const std::vector<std::string>& lines(int i) const { return shards_.at(static_cast<size_t>(i)); }
  std::string calibration_text(int i, int sequences) const;
  std::string coordinator_dir() const { return dir_.path("coordinator"); }
  std::string capture_path() const { return dir_.path("capture.bin"); }
  std::string relay_capture_path() const { return dir_.path("relay-capture.bin"); }
  int relay_upstream_port() const { return relay_upstream_port_; }  // the coordinator's relay_listen
  // Before the relay starts: it connects to the coordinator at `port` instead (e.g. a TcpForwarder's
  // in front of relay_upstream_port()).
  void route_relay_via(int port) { relay_via_port_ = port; }
  int relay_port() const { return relay_port_; }  // where relayed agents connect
  const std::string& relay_key() const { return relay_key_; }  // its CURVE public key (Z85)
  // Before the agents start: the relayed agents connect at `port` instead (e.g. a TcpForwarder's in
  // front of relay_port()).
  void route_relayed_agents_via(int port) { relayed_agents_via_port_ = port; }
  std::string path(const std::string& name) const { return dir_.path(name); }
  const FleetOptions& options() const { return options_; }

 private:
  // One start on port_; false (and the process reaped) if it never answered.
  bool try_start_coordinator();
  void start_relay();

  FleetOptions options_;
  ScratchDir dir_;
  int port_;
  std::string coordinator_settings_;  // coordinator.toml without its listen line
  std::string coordinator_key_;
  std::unique_ptr<Process> coordinator_;
  int relay_port_ = 0, relay_upstream_port_ = 0;  // where agents connect to the relay, and it to the coordinator
  int relay_via_port_ = 0, relayed_agents_via_port_ = 0;  // route_relay_via, route_relayed_agents_via
  std::string relay_key_;
  std::unique_ptr<Process> relay_;
  std::map<int, std::unique_ptr<Process>> agents_;
  std::vector<std::vector<std::string>> shards_;
};

// The rounds fleet tests run: the project's model, kRoundSequences x kRoundSeqLen tokens per agent,
// percentile scales, per channel.
inline constexpr int kRoundSequences = 10;
inline constexpr int kRoundSeqLen = 64;
nlohmann::json round_settings(int64_t model, int min_agents = 3);
// The entry of a round report's "models" with `label` ("fleet", "group:lowram", "class:static");
// throws if the round made none.
nlohmann::json result_model(const nlohmann::json& report, const std::string& label);

// Polls `predicate` every 50 ms until it holds or `timeout` passes; returns whether it held.
bool eventually(const std::function<bool()>& predicate, std::chrono::milliseconds timeout);

}  // namespace fedcal::testing
