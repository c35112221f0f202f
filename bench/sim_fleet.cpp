// fedcal-sim-fleet: N simulated agents against a real fedcal-coordinator, on real CURVE sockets, for
// scale runs. Each agent has its own key pair and connection, spread over loopback source addresses
// (127.0.1.2, 127.0.1.3, ...: --per-address agents each) so that the coordinator's per-address
// connection limit does not bite. A few threads drive thousands of agents (epoll on the sockets'
// ZMQ_FDs) in as few forked processes as the open-file limit allows (two descriptors per agent).
// Statistics vectors are small and real: a tiny synth model (random weights) calibrated on
// TinyStories lines with one bucket per octave, ~1,700 lanes.
//
// Phases, each timed: enrollment (tokens in batches, a bounded number in flight), heartbeats for
// --heartbeat-seconds (reply latency, coordinator CPU, SQL statements the coordinator ran), one
// round of --round-agents agents (wall time, coordinator CPU per agent, and the secure sum compared
// with the plain sum of the vectors of the agents the coordinator asked to unmask). Prints a JSON
// object; exits 1 if the round failed or the sums differ.
#include <fmt/ranges.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <sstream>
#include <thread>

#include "bench/fleet_process.h"
#include "bench/sim_agent.h"
#include "common/error.h"
#include "common/file_util.h"
#include "coordinator/admin_client.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/model_loader.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/calibration_stats.h"
#include "transport/connection_guard.h"

#ifdef FEDCAL_SIM_POSTGRES
#include "tests/postgres_server.h"
#endif

namespace {

using namespace fedcal;
using namespace fedcal::bench;
namespace fs = std::filesystem;

double seconds_since(SimClock::time_point start) { return std::chrono::duration<double>(SimClock::now() - start).count(); }

// Agents one process holds: each holds two descriptors (its socket's mailbox and its TCP connection)
// of the open-file limit, raised to its hard limit (transport's raise_file_limit).
size_t agents_per_process_limit() {
  const size_t files = raise_file_limit();
  return files > 2048 ? (files - 1024) / 2 : 512;
}

// Shared by the main process and the agent processes (an anonymous shared mapping made before
// they are forked): what the main process asks, and each agent process's progress.
struct Control {
  static constexpr int kMaxProcesses = 64;
  std::atomic<bool> stop{false};
  std::atomic<bool> record_heartbeats{false};
  std::atomic<int> enrolling{0};  // enrollments in flight over all processes, at most enroll_window
  int enroll_window = 200;
  std::atomic<int> online[kMaxProcesses] = {};
  std::atomic<int> failed[kMaxProcesses] = {};
};

// Drives agents[i] for i = first, first + stride, ...: enrollment (agents[i] takes tokens[i]),
// heartbeats, rounds.
void drive(std::vector<std::unique_ptr<SimAgent>>& agents, const std::vector<std::string>& tokens, size_t first, size_t stride,
           Control& control) {
  std::vector<SimAgent*> mine;
  std::vector<size_t> index;
  for (size_t i = first; i < agents.size(); i += stride) {
    mine.push_back(agents[i].get());
    index.push_back(i);
  }
  const int epoll = epoll_create1(EPOLL_CLOEXEC);
  if (epoll < 0) fail("epoll_create1: {}", std::strerror(errno));
  std::vector<epoll_event> events(256);
  size_t next_to_enroll = 0;
  auto last_sweep = SimClock::now();
  // Handles what is waiting on agent k; keeps the enrollment window's count.
  auto service = [&](size_t k) {
    SimAgent& agent = *mine[k];
    const bool was_enrolling = agent.state() == SimAgent::State::kEnrolling || agent.state() == SimAgent::State::kGreeting;
    agent.drain();
    const bool is_enrolling = agent.state() == SimAgent::State::kEnrolling || agent.state() == SimAgent::State::kGreeting;
    if (was_enrolling && !is_enrolling) --control.enrolling;
  };
  while (!control.stop) {
    // Enrollment: new agents while the window has room.
    while (next_to_enroll < mine.size() && control.enrolling < control.enroll_window) {
      ++control.enrolling;
      SimAgent& agent = *mine[next_to_enroll];
      agent.enroll(tokens[index[next_to_enroll]]);
      epoll_event event{};
      event.events = EPOLLIN | EPOLLET;
      event.data.u64 = next_to_enroll;
      if (epoll_ctl(epoll, EPOLL_CTL_ADD, agent.fd(), &event) != 0) fail("epoll_ctl: {}", std::strerror(errno));
      service(next_to_enroll);
      ++next_to_enroll;
    }
    const int ready = epoll_wait(epoll, events.data(), static_cast<int>(events.size()), 5);
    for (int e = 0; e < ready; ++e) service(static_cast<size_t>(events[static_cast<size_t>(e)].data.u64));
    const auto now = SimClock::now();
    const bool record = control.record_heartbeats;
    for (size_t k = 0; k < next_to_enroll; ++k) {
      SimAgent& agent = *mine[k];
      if (agent.state() != SimAgent::State::kOnline || now < agent.next_heartbeat()) continue;
      agent.heartbeat(now, record);
      service(k);  // a send may take the socket's edge: look again
    }
    // ZMQ_FD is edge-like; a sweep now and then catches anything an edge did not announce.
    if (now - last_sweep > std::chrono::milliseconds(200)) {
      for (size_t k = 0; k < next_to_enroll; ++k) service(k);
      last_sweep = now;
    }
  }
  close(epoll);
}

struct Vectors {
  std::vector<std::vector<uint64_t>> values;  // agent i contributes values[i % size]
  CalibrationStats layout;                    // metadata for reading a sum back as statistics
};

// The preset's model calibrated on `kinds` disjoint shards of the text, one bucket per octave.
Vectors calibrate_vectors(const std::string& model_path, const std::string& text_path, int kinds, int sequences, int seq_len) {
  LoadedModel loaded = load_model(model_path);
  auto tokenizer = load_tokenizer(loaded, std::nullopt);
  XnnRuntime runtime(1);
  Transformer transformer(loaded.model, runtime);
  std::istringstream text(read_text_file(text_path));
  Vectors vectors;
  std::string line;
  for (int kind = 0; kind < kinds; ++kind) {
    std::string lines;
    for (int i = 0; i < sequences && std::getline(text, line);) {
      if (line.empty()) continue;
      lines += line + "\n";
      ++i;
    }
    CalibrationOptions options;
    options.sequences = sequences;
    options.seq_len = seq_len;
    options.layout.mantissa_bits = 0;
    CalibrationStats stats = calibrate(transformer, *tokenizer, lines, model_fingerprint(loaded.model), options);
    vectors.values.push_back(contribution_vector(stats));
    if (kind == 0) vectors.layout = std::move(stats);
  }
  return vectors;
}

nlohmann::json quantiles(std::vector<float> values) {
  std::sort(values.begin(), values.end());
  auto at = [&](double q) {
    return values.empty() ? 0.0 : static_cast<double>(values[static_cast<size_t>(q * (values.size() - 1))]);
  };
  return {{"p50", at(0.5)}, {"p99", at(0.99)}, {"max", at(1.0)}};
}

}  // namespace

// Where agents connect: the coordinator, or (agent i) relay i mod relays.
struct Server {
  std::string endpoint, key;
};

// What one agent process was given.
struct Slice {
  int process = 0;
  size_t first = 0, count = 0;  // agents first .. first + count - 1 of the fleet
};

// One agent process (forked): agents `slice` of the fleet on `threads` threads until control.stop,
// then their measurements to `out` (JSON). Never returns.
[[noreturn]] void run_agent_process(const Slice& slice, const std::vector<Server>& servers,
                                    const std::vector<std::string>& tokens, const Vectors& vectors, int threads_count,
                                    int per_address, int transport_ping_ms, Control& control, const std::string& out) {
  int code = 0;
  try {
    // A libzmq context (one I/O thread) per 256 agents: a real agent's context holds one connection,
    // and libzmq's per-thread timer map costs O(connections) to cancel a timer (transport/curve.h).
    constexpr size_t kAgentsPerContext = 256;
    std::vector<std::unique_ptr<zmq::context_t>> contexts;  // outlive the agents' sockets
    std::vector<std::unique_ptr<SimAgent>> agents;
    std::vector<std::string> my_tokens;
    for (size_t i = slice.first; i < slice.first + slice.count; ++i) {
      if ((i - slice.first) % kAgentsPerContext == 0) {
        contexts.push_back(std::make_unique<zmq::context_t>(1));
        contexts.back()->set(zmq::ctxopt::max_sockets, static_cast<int>(kAgentsPerContext) + 16);
      }
      const size_t address = per_address > 0 ? i / static_cast<size_t>(per_address) : 0;
      const std::string source = per_address > 0 ? fmt::format("127.0.{}.{}", 1 + address / 250, 2 + address % 250) : "";
      const Server& server = servers[i % servers.size()];
      agents.push_back(std::make_unique<SimAgent>(*contexts.back(), server.endpoint, server.key, source,
                                                  vectors.values[i % vectors.values.size()], transport_ping_ms));
      my_tokens.push_back(tokens[i]);
    }
    std::vector<std::thread> threads;
    std::string thread_error;
    std::mutex error_mutex;
    for (int t = 0; t < threads_count; ++t) {
      threads.emplace_back([&, t] {
        try {
          drive(agents, my_tokens, static_cast<size_t>(t), static_cast<size_t>(threads_count), control);
        } catch (const std::exception& error) {
          const std::lock_guard lock(error_mutex);
          thread_error = error.what();
          control.stop = true;
        }
      });
    }
    while (!control.stop) {
      int online = 0, failed = 0;
      for (const auto& agent : agents) {
        online += agent->state() == SimAgent::State::kOnline ? 1 : 0;
        failed += agent->state() == SimAgent::State::kFailed ? 1 : 0;
      }
      control.online[slice.process] = online;
      control.failed[slice.process] = failed;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    for (auto& thread : threads) thread.join();
    nlohmann::json part = {
        {"latencies_ms", nlohmann::json::array()}, {"unmasked", nlohmann::json::array()}, {"failures", nlohmann::json::array()}};
    uint64_t recorded = 0;
    for (size_t k = 0; k < agents.size(); ++k) {
      const SimAgent& agent = *agents[k];
      recorded += agent.heartbeats_recorded;
      for (const float latency : agent.heartbeat_latencies_ms) part["latencies_ms"].push_back(latency);
      if (agent.unmasked()) part["unmasked"].push_back(slice.first + k);
      if (agent.state() == SimAgent::State::kFailed && part["failures"].size() < 3) part["failures"].push_back(agent.failure());
    }
    part["heartbeats_recorded"] = recorded;
    if (!thread_error.empty()) part["error"] = thread_error;
    write_file_atomically(out, part.dump());
    agents.clear();
  } catch (const std::exception& error) {
    std::fprintf(stderr, "[sim] agent process %d: %s\n", slice.process, error.what());
    control.stop = true;
    code = 1;
  }
  std::fflush(stderr);
  _exit(code);
}

int main(int argc, char** argv) {
  CLI::App app{
      "fedcal-sim-fleet: N simulated agents on real CURVE sockets against a real fedcal-coordinator: enrollment, "
      "heartbeats and a secure-aggregation round at fleet scale, measured in one run (JSON on stdout)"};
  int agents_count = 1000;
  int round_agents = -1;
  int heartbeat_seconds = 20;
  int heartbeat_interval_ms = 2000;
  int threads_count = 2;
  int per_address = 500;
  int transport_ping_ms = 1000;
  int agent_timeout_ms = 60000;
  int enroll_window = 200;
  std::string preset = "tiny";
  std::string database_url;
  int relays_count = 0;
  int relay_group_size = 0;
  bool postgres = false;
  bool keep = false;
  std::string text_path = std::string(FEDCAL_SOURCE_DIR) + "/data/tinystories/tinystories-sample.txt";
  app.add_option("--agents", agents_count, "Simulated agents")->capture_default_str()->check(CLI::Range(3, 200000));
  app.add_option("--round-agents", round_agents,
                 "Agents in the round (min_agents = max_agents = this; default: all; 0: no round)")
      ->check(CLI::Range(0, 200000));
  app.add_option("--heartbeat-seconds", heartbeat_seconds, "How long heartbeats are measured (0: skip)")->capture_default_str();
  app.add_option("--heartbeat-interval-ms", heartbeat_interval_ms,
                 "The coordinator's heartbeat_interval_ms (agents heartbeat this often; its default is 2000)")
      ->capture_default_str()
      ->check(CLI::Range(100, 600000));
  app.add_option("--agent-timeout-ms", agent_timeout_ms,
                 "The coordinator's agent_timeout_ms (its default is 10000): simulated agents share this machine's cores, "
                 "so one busy with its secure-aggregation work answers later than a board of its own would")
      ->capture_default_str()
      ->check(CLI::Range(1000, 3600000));
  app.add_option("--threads", threads_count, "Threads driving the agents, per agent process")
      ->capture_default_str()
      ->check(CLI::Range(1, 64));
  app.add_option("--per-address", per_address,
                 "Agents per loopback source address (the coordinator allows 1,024); 0: connect from 127.0.0.1 without "
                 "binding a source port first (with --relays only: the sim's relays allow any number per address). "
                 "Binding each connection's source to port 0 first draws on one ephemeral port range")
      ->capture_default_str()
      ->check(CLI::Range(0, 1024));
  app.add_option("--agent-ping-ms", transport_ping_ms,
                 "The agents' transport_ping_ms (ZMTP pings, a CURVE message each way; the agent's default is 1000): at "
                 "tens of thousands of agents the pings are most of the relays' and the simulated agents' work; 0: no "
                 "pings (the sim only: libzmq's per-context timers then cost the simulated agents nothing)")
      ->capture_default_str()
      ->check(CLI::Range(0, 600000));
  app.add_option("--enroll-window", enroll_window, "Enrollments in flight at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 100000));
  app.add_option("--preset", preset, "Synth model shape the round runs on (random weights)")->capture_default_str();
  app.add_option("--text", text_path, "Text the statistics vectors are calibrated on")->capture_default_str();
  app.add_option("--relays", relays_count, "Relays (fedcal-relay) the agents connect through, agent i to relay i mod N (0: none)")
      ->capture_default_str()
      ->check(CLI::Range(0, 64));
  app.add_option("--relay-group-size", relay_group_size,
                 "Secure aggregation per group at the relays, groups of at most N (the round's min_agents: N / 2, so "
                 "groups hold N / 2..N agents); 0: between each agent and the coordinator")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--database-url", database_url, "Run the coordinator on this PostgreSQL database (default: SQLite)");
#ifdef FEDCAL_SIM_POSTGRES
  app.add_flag("--postgres", postgres,
               "Start a PostgreSQL server of its own (Debian's initdb and pg_ctl, a scratch folder, unix socket) and run "
               "the coordinator on it");
#endif
  app.add_flag("--keep", keep, "Keep the scratch folder (the coordinator's log and state)");
  CLI11_PARSE(app, argc, argv);
  if (round_agents < 0) round_agents = agents_count;
  if (per_address == 0 && relays_count == 0) {
    std::fprintf(stderr,
                 "fedcal-sim-fleet: --per-address 0 needs --relays (the coordinator allows 1,024 connections per address)\n");
    return 2;
  }
  if (round_agents > agents_count) {
    std::fprintf(stderr, "fedcal-sim-fleet: --round-agents %d exceeds --agents %d\n", round_agents, agents_count);
    return 2;
  }
  if (relay_group_size > 0 && relays_count == 0) {
    std::fprintf(stderr, "fedcal-sim-fleet: --relay-group-size needs --relays\n");
    return 2;
  }
  // Agent processes: as many as the open-file limit needs.
  const size_t per_process = agents_per_process_limit();
  const int processes = static_cast<int>((static_cast<size_t>(agents_count) + per_process - 1) / per_process);
  if (processes > Control::kMaxProcesses) {
    std::fprintf(stderr, "fedcal-sim-fleet: %d agents need %d processes at %zu agents each (open-file limit); at most %d\n",
                 agents_count, processes, per_process, Control::kMaxProcesses);
    return 2;
  }
  void* mapping = mmap(nullptr, sizeof(Control), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) {
    std::perror("mmap");
    return 1;
  }
  Control& control = *new (mapping) Control;
  control.enroll_window = enroll_window;

  char pattern[] = "/tmp/fedcal-sim-fleet-XXXXXX";
  const std::string root = mkdtemp(pattern);
#ifdef FEDCAL_SIM_POSTGRES
  std::unique_ptr<testing::PostgresServer> server;  // outlives the coordinator
#endif
  CoordinatorProcess coordinator;
  std::vector<RelayProcess> relays;
  std::vector<pid_t> children;
  nlohmann::json result = {{"agents", agents_count},
                           {"relays", relays_count},
                           {"relay_group_size", relay_group_size},
                           {"agent_processes", processes},
                           {"threads_per_process", threads_count},
                           {"agent_ping_ms", transport_ping_ms}};
  int exit_code = 0;
  // Stops the agent processes and gathers what they measured.
  nlohmann::json parts = nlohmann::json::array();
  auto stop_agents = [&] {
    control.stop = true;
    for (size_t k = 0; k < children.size(); ++k) {
      int status = 0;
      waitpid(children[k], &status, 0);
      const std::string part = root + "/part-" + std::to_string(k) + ".json";
      if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && fs::exists(part))
        parts.push_back(nlohmann::json::parse(read_text_file(part)));
      else
        fail("agent process {} (pid {}) ended without its results (status {})", k, children[k], status);
    }
    children.clear();
  };
  try {
#ifdef FEDCAL_SIM_POSTGRES
    if (postgres) {
      server = std::make_unique<testing::PostgresServer>();
      database_url = server->create_database();
    }
#endif
    result["database"] = database_url.empty() ? "sqlite" : "postgresql";
    std::string config = fmt::format("heartbeat_interval_ms = {}\nagent_timeout_ms = {}\ntransport_pings = false\n",
                                     heartbeat_interval_ms, agent_timeout_ms);
    if (!database_url.empty()) config += fmt::format("database_url = \"{}\"\n", database_url);
    // With relay groups min_agents is a group's minimum: the round waits for all its agents instead.
    if (relay_group_size > 0) config += "join_grace_ms = 300000\n";
    // Relays: keys first (the coordinator lists them), started once it runs; ports above its own.
    const int relay_base_port = 20000 + static_cast<int>(getpid() % 12000) + 1;
    const std::string relay_listen = fmt::format("tcp://127.0.0.1:{}", relay_base_port);
    if (relays_count > 0) {
      std::vector<std::string> keys;
      for (int r = 0; r < relays_count; ++r) keys.push_back(fmt::format("\"{}\"", create_relay_key(root, r)));
      config += fmt::format("relays = [{}]\nrelay_listen = \"{}\"\n", fmt::join(keys, ", "), relay_listen);
    }
    coordinator = start_coordinator(root, config);
    std::fprintf(stderr, "[sim] coordinator pid %d on %s, state in %s\n", coordinator.pid, coordinator.endpoint.c_str(),
                 root.c_str());
    std::vector<Server> servers;
    for (int r = 0; r < relays_count; ++r) {
      relays.push_back(start_relay(root, r, relay_base_port + 1 + r, relay_listen, coordinator.coordinator_key));
      servers.push_back({relays.back().endpoint, relays.back().public_key});
      std::fprintf(stderr, "[sim] relay %d pid %d on %s\n", r, relays.back().pid, relays.back().endpoint.c_str());
    }
    if (servers.empty()) servers.push_back({coordinator.endpoint, coordinator.coordinator_key});

    // The model and the statistics vectors.
    const std::string model_dir = (fs::path(program_dir()).parent_path().parent_path() / "models/tinystories-1.8m").string();
    const std::string model_path = root + "/" + preset + ".bin";
    ModelConfig shape = find_synth_preset(preset).config;
    shape.vocab_size = std::max(shape.vocab_size, 1024);  // the project tokenizer's 1,024 pieces
    write_llama2c_checkpoint(synthesize_model(shape, 1), model_path, Llama2cVersion::kVersion1);
    const auto imported = coordinator::admin_request(
        coordinator.admin, {{"command", "models.import"}, {"path", model_path}, {"tokenizer", model_dir + "/tokenizer.model"}});
    const Vectors vectors = calibrate_vectors(imported["path"].get<std::string>(), text_path, 8, 4, 64);
    result["statistics_values"] = vectors.values[0].size();
    std::fprintf(stderr, "[sim] statistics vector: %zu values (%d kinds)\n", vectors.values[0].size(), 8);

    // Tokens, then the agent processes (each enrolls its agents, a bounded number in flight).
    auto phase_start = SimClock::now();
    std::vector<std::string> tokens;
    for (int made = 0; made < agents_count;) {
      const int count = std::min(10000, agents_count - made);
      const auto reply = coordinator::admin_request(coordinator.admin, {{"command", "token.create"}, {"count", count}}, 60000);
      if (count == 1) {
        tokens.push_back(reply["token"].get<std::string>());
      } else {
        for (const auto& each : reply["tokens"]) tokens.push_back(each.get<std::string>());
      }
      made += count;
    }
    std::fflush(stderr);
    for (int k = 0; k < processes; ++k) {
      Slice slice;
      slice.process = k;
      slice.first = static_cast<size_t>(agents_count) * static_cast<size_t>(k) / static_cast<size_t>(processes);
      slice.count = static_cast<size_t>(agents_count) * static_cast<size_t>(k + 1) / static_cast<size_t>(processes) - slice.first;
      const pid_t pid = fork();
      if (pid < 0) fail("fork: {}", std::strerror(errno));
      if (pid == 0) {
        run_agent_process(slice, servers, tokens, vectors, threads_count, per_address, transport_ping_ms, control,
                          root + "/part-" + std::to_string(k) + ".json");
      }
      children.push_back(pid);
    }
    auto fleet_counts = [&] {
      std::pair<int, int> online_failed{0, 0};
      for (int k = 0; k < processes; ++k) {
        online_failed.first += control.online[k];
        online_failed.second += control.failed[k];
      }
      return online_failed;
    };
    auto relays_cpu_seconds = [&] {
      double total = 0;
      for (const RelayProcess& relay : relays) total += process_cpu_seconds(relay.pid);
      return total;
    };
    auto sim_cpu_seconds = [&] {
      double total = 0;
      for (const pid_t child : children) total += process_cpu_seconds(child);
      return total;
    };
    // An agent process that died (a crash, the OOM killer) stops the run.
    auto check_children = [&] {
      if (control.stop) fail("an agent process stopped (see above)");
      for (size_t k = 0; k < children.size(); ++k) {
        int status = 0;
        if (waitpid(children[k], &status, WNOHANG) == children[k]) {
          children.erase(children.begin() + static_cast<std::ptrdiff_t>(k));
          fail("agent process {} ended early ({} {})", k, WIFSIGNALED(status) ? "signal" : "exit status",
               WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
        }
      }
    };
    auto last_print = SimClock::now();
    while (true) {
      check_children();
      const auto [online, failed] = fleet_counts();
      if (online + failed == agents_count) break;
      if (seconds_since(last_print) > 5) {
        std::fprintf(stderr, "[sim] enrolling: %d online, %d failed of %d (%.0f s)\n", online, failed, agents_count,
                     seconds_since(phase_start));
        last_print = SimClock::now();
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    result["enroll_seconds"] = seconds_since(phase_start);
    const int enroll_failed = fleet_counts().second;
    result["enroll_failed"] = enroll_failed;
    std::fprintf(stderr, "[sim] %d agents enrolled and online in %.1f s (%d failed) by %d process(es)\n",
                 agents_count - enroll_failed, result["enroll_seconds"].get<double>(), enroll_failed, processes);
    if (enroll_failed) fail("{} agents could not enroll (their errors are in the JSON's agent_failures)", enroll_failed);

    // Heartbeats.
    if (heartbeat_seconds > 0) {
      std::this_thread::sleep_for(std::chrono::milliseconds(heartbeat_interval_ms));  // every agent's first heartbeat is out
      // A status command may run statements of its own: two back to back measure them.
      auto statements_now = [&] {
        return coordinator::admin_request(coordinator.admin, {{"command", "status"}})["database_statements"].get<int64_t>();
      };
      const int64_t statements_first = statements_now();
      const int64_t statements_before = statements_now();
      const int64_t per_status = statements_before - statements_first;
      const double cpu_before = process_cpu_seconds(coordinator.pid);
      const double sim_cpu_before = sim_cpu_seconds();
      const double relays_cpu_before = relays_cpu_seconds();
      phase_start = SimClock::now();
      control.record_heartbeats = true;
      std::this_thread::sleep_for(std::chrono::seconds(heartbeat_seconds));
      control.record_heartbeats = false;
      const double elapsed = seconds_since(phase_start);
      const double cpu = process_cpu_seconds(coordinator.pid) - cpu_before;
      const double sim_cpu = sim_cpu_seconds() - sim_cpu_before;
      const double relays_cpu = relays_cpu_seconds() - relays_cpu_before;
      const int64_t statements = std::max<int64_t>(0, statements_now() - statements_before - per_status);
      result["heartbeat_seconds"] = elapsed;
      result["heartbeat_interval_ms"] = heartbeat_interval_ms;
      result["sql_statements_during_heartbeats"] = statements;
      result["coordinator_cpu_percent_heartbeats"] = 100 * cpu / elapsed;
      result["sim_cpu_percent_heartbeats"] = 100 * sim_cpu / elapsed;
      result["relays_cpu_percent_heartbeats"] = 100 * relays_cpu / elapsed;
      std::fprintf(stderr,
                   "[sim] heartbeats for %.0f s: %lld SQL statements; coordinator CPU %.1f%%, relays %.1f%%, agent processes "
                   "%.1f%%\n",
                   elapsed, static_cast<long long>(statements), 100 * cpu / elapsed, 100 * relays_cpu / elapsed,
                   100 * sim_cpu / elapsed);
    }

    // One round.
    nlohmann::json status;
    const int round_min_agents = relay_group_size > 0 ? std::min(round_agents, std::max(3, relay_group_size / 2)) : round_agents;
    if (round_agents > 0) {
      const double cpu_before = process_cpu_seconds(coordinator.pid);
      const double relays_cpu_before = relays_cpu_seconds();
      phase_start = SimClock::now();
      const auto started = coordinator::admin_request(coordinator.admin, {{"command", "round.start"},
                                                                          {"settings",
                                                                           {{"model_id", imported["id"]},
                                                                            {"min_agents", round_min_agents},
                                                                            {"max_agents", round_agents},
                                                                            {"relay_group_size", relay_group_size},
                                                                            {"sequences_per_agent", 4},
                                                                            {"seq_len", 64},
                                                                            {"mantissa_bits", 0},
                                                                            {"method", "percentile:99.99"}}}});
      std::string last_stage;
      // The coordinator's CPU by the stage the round was in when it was spent (read at each poll).
      nlohmann::json cpu_by_stage = nlohmann::json::object();
      double cpu_at_poll = cpu_before;
      while (true) {
        status = coordinator::admin_request(coordinator.admin,
                                            {{"command", "round.status"}, {"id", started["round"]}, {"agents", false}}, 60000);
        const std::string stage = status["stage"].get<std::string>();
        const double cpu_now = process_cpu_seconds(coordinator.pid);
        if (!last_stage.empty()) cpu_by_stage[last_stage] = cpu_by_stage.value(last_stage, 0.0) + (cpu_now - cpu_at_poll);
        cpu_at_poll = cpu_now;
        if (stage != last_stage) {
          std::fprintf(stderr, "[sim] round %lld: %s (%.1f s)\n", static_cast<long long>(started["round"].get<int64_t>()),
                       stage.c_str(), seconds_since(phase_start));
          last_stage = stage;
        }
        if (stage == "done" || stage == "failed") break;
        check_children();
        std::this_thread::sleep_for(std::chrono::milliseconds(500));
      }
      const double wall = seconds_since(phase_start);
      const double cpu = process_cpu_seconds(coordinator.pid) - cpu_before;
      result["round_agents"] = round_agents;
      result["round_stage"] = status["stage"];
      if (status.contains("failure")) result["round_failure"] = status["failure"];
      result["round_seconds"] = wall;
      result["round_stage_ms"] = status["stage_ms"];
      result["coordinator_cpu_seconds_round"] = cpu;
      result["coordinator_cpu_seconds_by_stage"] = cpu_by_stage;
      result["relays_cpu_seconds_round"] = relays_cpu_seconds() - relays_cpu_before;
      result["coordinator_cpu_ms_per_agent"] = 1000 * cpu / round_agents;
      // The same less what the fleet's heartbeats cost meanwhile (their rate measured above): the
      // round's own work.
      if (result.contains("coordinator_cpu_percent_heartbeats")) {
        const double heartbeats_cpu = result["coordinator_cpu_percent_heartbeats"].get<double>() / 100 * wall;
        result["coordinator_round_cpu_ms_per_agent"] = 1000 * std::max(0.0, cpu - heartbeats_cpu) / round_agents;
      }
      result["contributors"] = status["contributors"];
      std::fprintf(
          stderr,
          "[sim] round of %d agents: %s in %.1f s, %d contributors, coordinator CPU %.2f ms per agent (%.2f ms above the "
          "heartbeats' rate)\n",
          round_agents, status["stage"].get<std::string>().c_str(), wall, status["contributors"].get<int>(),
          1000 * cpu / round_agents, result.value("coordinator_round_cpu_ms_per_agent", 1000 * cpu / round_agents));
      if (status["stage"] != "done") exit_code = 1;
    }
    stop_agents();

    // What the agent processes measured.
    uint64_t sent = 0;
    std::vector<float> latencies;
    nlohmann::json failures = nlohmann::json::array();
    std::vector<uint64_t> sum(vectors.values[0].size(), 0);
    int unmasked = 0;
    for (const auto& part : parts) {
      sent += part["heartbeats_recorded"].get<uint64_t>();
      for (const auto& latency : part["latencies_ms"]) latencies.push_back(latency.get<float>());
      for (const auto& failure : part["failures"]) failures.push_back(failure);
      if (part.contains("error")) failures.push_back(part["error"]);
      // The plain sum of the vectors of the agents the coordinator unmasked (those it asked to unmask).
      for (const auto& agent : part["unmasked"]) {
        const auto& values = vectors.values[agent.get<size_t>() % vectors.values.size()];
        for (size_t k = 0; k < sum.size(); ++k) sum[k] += values[k];
        ++unmasked;
      }
    }
    if (!failures.empty()) result["agent_failures"] = failures;
    if (heartbeat_seconds > 0) {
      const nlohmann::json q = quantiles(latencies);
      result["heartbeats_sent"] = sent;
      result["heartbeats_answered"] = latencies.size();
      result["heartbeat_p50_ms"] = q["p50"];
      result["heartbeat_p99_ms"] = q["p99"];
      result["heartbeat_max_ms"] = q["max"];
      const double statements = result["sql_statements_during_heartbeats"].get<double>();
      result["sql_statements_per_heartbeat"] = sent ? statements / static_cast<double>(sent) : 0.0;
      std::fprintf(stderr,
                   "[sim] heartbeats: %llu sent, %zu answered, latency p50 %.2f ms p99 %.2f ms max %.1f ms; %.5f SQL "
                   "statements per heartbeat\n",
                   static_cast<unsigned long long>(sent), latencies.size(), q["p50"].get<double>(), q["p99"].get<double>(),
                   q["max"].get<double>(), result["sql_statements_per_heartbeat"].get<double>());
    }
    if (round_agents > 0) {
      const std::string plain = stats_from_contribution(vectors.layout, sum).sha256();
      const bool equal =
          status.value("statistics_sha256", std::string()) == plain && unmasked == status["contributors"].get<int>();
      result["secure_sum_equals_plain"] = equal;
      std::fprintf(stderr, "[sim] the secure sum of %d contributors %s the plain sum of the %d agents asked to unmask\n",
                   status["contributors"].get<int>(), equal ? "equals" : "DIFFERS FROM", unmasked);
      if (!equal) exit_code = 1;
    }
    // Package distribution is measured by fedcal-bench-package-cache (nginx caches in front of the
    // origin); this run distributes none.
    result["origin_bytes_served"] = nullptr;
    result["cache_hit_ratio"] = nullptr;
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fedcal-sim-fleet: %s\n", error.what());
    result["error"] = error.what();
    exit_code = 1;
  }
  control.stop = true;
  for (const pid_t child : children) waitpid(child, nullptr, 0);
  for (RelayProcess& relay : relays) stop_relay(relay);
  stop_coordinator(coordinator);
  if (!keep && exit_code == 0) {
    fs::remove_all(root);
  } else {
    std::fprintf(stderr, "[sim] kept %s (coordinator.log, state/)\n", root.c_str());
  }
  std::printf("%s\n", result.dump(2).c_str());
  return exit_code;
}
