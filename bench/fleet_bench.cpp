// fedcal-bench-fleet: federated rounds at scale on loopback, measured in one run.
//  - per fleet size: round wall time, secure-aggregation stage time, the same vectors summed in the
//    clear over the same (CURVE) transport, bytes on the wire per agent, coordinator CPU per agent;
//  - heartbeat scale: N agents heartbeating against one coordinator, reply latency and CPU, and
//    (--flood) the same beside clients flooding refused messages: refused rate, audit growth.
// The coordinator is the real fedcal-coordinator process; the agents are lightweight threads that
// speak the real protocol with the real secure-aggregation client, sending a real statistics vector
// (the project model calibrated on 16 TinyStories lines) instead of calibrating each time.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <future>
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
#include "protocol/wire.h"
#include "secagg/secagg_wire.h"
#include "secagg/secure_aggregation.h"
#include "transport/curve.h"

namespace {

using namespace fedcal;
using Clock = std::chrono::steady_clock;
namespace fs = std::filesystem;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

using Fleet = bench::CoordinatorProcess;
using bench::process_cpu_seconds;

// One agent of the bench: a SimAgent (bench/sim_agent.h: its own key pair and connection, the real
// protocol and secure-aggregation client) driven synchronously by one thread.
class BenchAgent {
 public:
  BenchAgent(zmq::context_t& context, const Fleet& fleet, const std::vector<uint64_t>& vector)
      : agent_(context, fleet.endpoint, fleet.coordinator_key, "127.0.0.1", vector) {
    agent_.enroll(coordinator::admin_request(fleet.admin, {{"command", "token.create"}})["token"].get<std::string>());
    const auto deadline = Clock::now() + std::chrono::seconds(30);
    while (agent_.state() != bench::SimAgent::State::kOnline) {
      if (agent_.state() == bench::SimAgent::State::kFailed) fail("bench agent: {}", agent_.failure());
      if (Clock::now() > deadline) fail("bench agent: not welcomed within 30 s");
      step(100);
    }
  }
  // Handles what arrives within `timeout_ms`; returns false when nothing did.
  bool step(int timeout_ms) {
    zmq::pollitem_t item{agent_.socket().handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(timeout_ms));
    return agent_.drain() > 0;
  }
  void heartbeat() { agent_.heartbeat(bench::SimClock::now(), true); }
  bench::SimAgent& agent() { return agent_; }

 private:
  bench::SimAgent agent_;
};

// The same vectors, uploaded in the clear over the same transport, in the same lanes as the secure
// round (so the same bytes), and summed: the baseline the secure stages are compared with.
double plain_aggregation_seconds(zmq::context_t& context, int agents, const std::vector<uint64_t>& vector, uint32_t lane_bits) {
  const CurveKeyPair server_keys = CurveKeyPair::generate();
  zmq::socket_t server(context, zmq::socket_type::router);
  SocketLimits limits;
  server.set(zmq::sockopt::curve_server, 1);
  server.set(zmq::sockopt::curve_secretkey, server_keys.secret_key);
  server.set(zmq::sockopt::maxmsgsize, limits.max_message_bytes);
  server.bind("tcp://127.0.0.1:*");
  const std::string endpoint = server.get(zmq::sockopt::last_endpoint);
  std::vector<std::unique_ptr<zmq::socket_t>> clients;
  for (int i = 0; i < agents; ++i) {
    auto client = std::make_unique<zmq::socket_t>(context, zmq::socket_type::dealer);
    configure_curve_client(*client, CurveKeyPair::generate(), server_keys.public_key, limits);
    client->connect(endpoint);
    client->send(zmq::str_buffer("ready"), zmq::send_flags::none);
    clients.push_back(std::move(client));
  }
  std::vector<std::string> routes;
  while (static_cast<int>(routes.size()) < agents) {
    zmq::message_t route, body;
    (void)server.recv(route);
    (void)server.recv(body);
    routes.push_back(route.to_string());
  }
  const auto start = Clock::now();
  for (const std::string& route : routes) {
    server.send(zmq::buffer(route), zmq::send_flags::sndmore);
    server.send(zmq::str_buffer("go"), zmq::send_flags::none);
  }
  std::vector<std::thread> threads;
  for (auto& client : clients) {
    threads.emplace_back([&vector, lane_bits, socket = client.get()] {
      zmq::message_t go;
      (void)socket->recv(go);
      OutgoingMessage message;
      write_lane_vector(vector, lane_bits,
                        message.body().initMaskedInput().initValues(static_cast<unsigned>(vector.size() * lane_bits / 8)));
      const auto bytes = message.encode(1);
      socket->send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
    });
  }
  std::vector<uint64_t> sum(vector.size(), 0);
  for (int i = 0; i < agents; ++i) {
    zmq::message_t route, body;
    (void)server.recv(route);
    (void)server.recv(body);
    DecodedEnvelope decoded = decode_envelope(std::span(static_cast<const std::byte*>(body.data()), body.size()));
    const auto values =
        read_lane_vector(decoded.envelope().getBody().getMaskedInput().getValues(), vector.size(), lane_bits, "values");
    for (size_t k = 0; k < sum.size(); ++k) sum[k] += values[k];
  }
  const double seconds = seconds_since(start);
  for (auto& thread : threads) thread.join();
  return seconds;
}

// One flooding client: a CURVE connection that sends refused messages as fast as the socket takes
// them (its kind by `kind % 3`: an enrolled key replaying one message, an unknown key, garbage bytes)
// and reads whatever comes back.
uint64_t flood(const Fleet& fleet, int kind, const std::atomic<bool>& stop) {
  zmq::context_t context(1);
  zmq::socket_t socket(context, zmq::socket_type::dealer);
  CurveKeyPair keys = CurveKeyPair::generate();
  if (kind % 3 == 0) {  // enrolled: enroll over its own connection first
    zmq::socket_t enroll(context, zmq::socket_type::dealer);
    configure_curve_client(enroll, keys, fleet.coordinator_key, SocketLimits{});
    enroll.connect(fleet.endpoint);
    OutgoingMessage message;
    auto request = message.body().initEnroll();
    request.setToken(coordinator::admin_request(fleet.admin, {{"command", "token.create"}})["token"].get<std::string>());
    request.setName("flooder");
    const auto bytes = message.encode(1);
    enroll.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore);
    enroll.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
    zmq::pollitem_t item{enroll.handle(), 0, ZMQ_POLLIN, 0};
    zmq::poll(&item, 1, std::chrono::seconds(10));
  }
  configure_curve_client(socket, keys, fleet.coordinator_key, SocketLimits{});
  socket.connect(fleet.endpoint);
  OutgoingMessage message;
  message.body().initHeartbeat();
  const std::vector<std::byte> replayed = message.encode(1);  // at or below the enrollment's number
  const std::vector<std::byte> garbage(64, std::byte{0x5a});
  const std::vector<std::byte>& payload = kind % 3 == 2 ? garbage : replayed;
  uint64_t sent = 0;
  while (!stop) {
    for (int i = 0; i < 64; ++i) {
      if (!socket.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore | zmq::send_flags::dontwait)) break;
      socket.send(zmq::buffer(payload.data(), payload.size()), zmq::send_flags::none);
      ++sent;
    }
    zmq::message_t reply;
    while (socket.recv(reply, zmq::recv_flags::dontwait)) {
    }
    zmq::pollitem_t item{socket.handle(), 0, ZMQ_POLLOUT, 0};
    zmq::poll(&item, 1, std::chrono::milliseconds(1));
  }
  return sent;
}

// Every agent heartbeats once a second (staggered) for `seconds`; with `flooders` > 0, that many
// flooding clients run at the same time. Reply latencies, coordinator CPU, and under a flood the
// refused-message rate and the audit table's growth.
nlohmann::json measure_heartbeats(const Fleet& fleet, std::vector<std::unique_ptr<BenchAgent>>& agents, int seconds,
                                  int flooders) {
  for (auto& agent : agents) agent->agent().heartbeat_latencies_ms.clear();
  const int threads_count = 4;
  std::atomic<bool> stop{false};
  std::vector<std::thread> threads;
  const int64_t audit_before = coordinator::admin_request(fleet.admin, {{"command", "status"}})["audit_entries"].get<int64_t>();
  std::vector<std::future<uint64_t>> flooding;
  for (int i = 0; i < flooders; ++i) flooding.push_back(std::async(std::launch::async, [&, i] { return flood(fleet, i, stop); }));
  const double cpu_before = process_cpu_seconds(fleet.pid);
  const auto start = Clock::now();
  for (int t = 0; t < threads_count; ++t) {
    threads.emplace_back([&, t] {
      std::vector<Clock::time_point> next;
      std::vector<BenchAgent*> mine;
      for (size_t i = static_cast<size_t>(t); i < agents.size(); i += threads_count) {
        mine.push_back(agents[i].get());
        next.push_back(Clock::now() + std::chrono::milliseconds(static_cast<int>(i * 1000 / agents.size())));
      }
      while (!stop) {
        for (size_t i = 0; i < mine.size(); ++i) {
          if (Clock::now() >= next[i]) {
            mine[i]->heartbeat();
            next[i] += std::chrono::seconds(1);
          }
          while (mine[i]->step(0)) {
          }
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(2));
      }
    });
  }
  std::this_thread::sleep_for(std::chrono::seconds(seconds));
  const auto list = coordinator::admin_request(fleet.admin, {{"command", "agents.list"}});
  stop = true;
  for (auto& thread : threads) thread.join();
  uint64_t refused = 0;
  for (auto& flooder : flooding) refused += flooder.get();
  const double cpu = process_cpu_seconds(fleet.pid) - cpu_before;
  const double elapsed = seconds_since(start);
  std::vector<double> latencies;
  for (const auto& agent : agents) {
    for (const float ms : agent->agent().heartbeat_latencies_ms) latencies.push_back(ms / 1000.0);
  }
  const size_t expected = agents.size() * static_cast<size_t>(seconds);
  const size_t missing = latencies.size() < expected ? expected - latencies.size() : 0;
  std::sort(latencies.begin(), latencies.end());
  auto quantile = [&](double q) { return latencies.empty() ? 0.0 : latencies[static_cast<size_t>(q * (latencies.size() - 1))]; };
  size_t online = 0;
  for (const auto& agent : list["agents"]) online += agent["online"].get<bool>() ? 1 : 0;
  const int64_t audit_after = coordinator::admin_request(fleet.admin, {{"command", "status"}})["audit_entries"].get<int64_t>();
  nlohmann::json row = {{"agents", agents.size()},
                        {"seconds", elapsed},
                        {"replies", latencies.size()},
                        {"replies_missing_vs_1_per_second", missing},
                        {"latency_p50_ms", 1000 * quantile(0.5)},
                        {"latency_p99_ms", 1000 * quantile(0.99)},
                        {"latency_max_ms", 1000 * quantile(1.0)},
                        {"online_at_end", online},
                        {"coordinator_cpu_percent", 100 * cpu / elapsed},
                        {"flooders", flooders},
                        {"refused_messages", refused},
                        {"refused_per_second", static_cast<double>(refused) / elapsed},
                        {"audit_entries_added", audit_after - audit_before},
                        {"audit_entries", audit_after}};
  std::fprintf(stderr,
               "[bench] %zu agents heartbeating for %.0f s%s: %zu replies, latency p50 %.2f ms p99 %.2f ms max %.2f ms, %zu "
               "online at the end, coordinator CPU %.1f%%",
               agents.size(), elapsed, flooders ? fmt::format(" beside {} flooders", flooders).c_str() : "", latencies.size(),
               1000 * quantile(0.5), 1000 * quantile(0.99), 1000 * quantile(1.0), online, 100 * cpu / elapsed);
  if (flooders) {
    std::fprintf(stderr, "; %llu refused messages (%.0f/s), audit table +%lld entries (%lld in all)",
                 static_cast<unsigned long long>(refused), static_cast<double>(refused) / elapsed,
                 static_cast<long long>(audit_after - audit_before), static_cast<long long>(audit_after));
  }
  std::fprintf(stderr, "\n");
  return row;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"fedcal-bench-fleet: federated rounds and heartbeats at scale on loopback"};
  std::vector<int> sizes = {8, 32, 128};
  int heartbeat_agents = 1000;
  int heartbeat_seconds = 20;
  std::string text_path = std::string(FEDCAL_SOURCE_DIR) + "/data/tinystories/tinystories-sample.txt";
  bool json = false;
  int requested_lane_bits = 0;
  app.add_option("--agents", sizes, "Fleet sizes for rounds (e.g. --agents 8 32 128)")->capture_default_str()->delimiter(',');
  app.add_option("--heartbeat-agents", heartbeat_agents, "Agents for the heartbeat test (0: skip)")->capture_default_str();
  app.add_option("--heartbeat-seconds", heartbeat_seconds, "Duration of the heartbeat test")->capture_default_str();
  int flood_threads = 0;
  app.add_option("--flood", flood_threads,
                 "Then the heartbeat test again beside this many clients flooding refused messages (replays of an "
                 "enrolled key, an unknown key, garbage; 0: skip)")
      ->capture_default_str();
  app.add_option("--text", text_path, "The TinyStories text (lines 1-7003 are cut into shards)")->capture_default_str();
  app.add_option("--lane-bits", requested_lane_bits, "Bits per masked value: 0 = the round's automatic choice, or 32 / 64")
      ->capture_default_str()
      ->check(CLI::IsMember({0, 32, 64}));
  std::string preset;
  app.add_option("--preset", preset,
                 "Run the rounds on this synth shape (random weights, e.g. smollm-135m) instead of the project's model: "
                 "the statistics vector, and so the upload, grows with the model");
  bool importance = false;
  app.add_flag("--importance", importance, "Agents also upload importance sums (a round exporting imatrix; 64-bit lanes)");
  app.add_flag("--json", json, "One JSON object on stdout");
  CLI11_PARSE(app, argc, argv);

  char pattern[] = "/tmp/fedcal-bench-fleet-XXXXXX";
  const std::string root = mkdtemp(pattern);
  nlohmann::json results = {{"rounds", nlohmann::json::array()}};
  Fleet fleet;
  try {
    fleet = bench::start_coordinator(root, "heartbeat_interval_ms = 1000\nagent_timeout_ms = 10000\n");
    const std::string model_dir = fs::path(bench::program_dir()).parent_path().parent_path() / "models/tinystories-1.8m";
    std::string model_path = model_dir + "/model.bin", tokenizer_path = model_dir + "/tokenizer.bin";
    if (!preset.empty()) {  // any tokenizer whose ids fit the vocabulary serves random weights (a llama2.c one must match it)
      model_path = root + "/" + preset + ".bin";
      tokenizer_path = model_dir + "/tokenizer.model";
      write_llama2c_checkpoint(synthesize_model(find_synth_preset(preset).config, 1), model_path, Llama2cVersion::kVersion1);
    }
    const auto imported = coordinator::admin_request(
        fleet.admin, {{"command", "models.import"}, {"path", model_path}, {"tokenizer", tokenizer_path}});
    const int64_t model_id = imported["id"].get<int64_t>();

    // A real statistics vector: the model calibrated on 16 training lines.
    std::vector<uint64_t> vector;
    {
      LoadedModel loaded = load_model(imported["path"].get<std::string>());
      auto tokenizer = load_tokenizer(loaded, std::nullopt);
      XnnRuntime runtime(1);
      Transformer transformer(loaded.model, runtime);
      std::istringstream text(read_text_file(text_path));
      std::string line, lines;
      for (int i = 0; i < 16 && std::getline(text, line);) {
        if (!line.empty()) {
          lines += line + "\n";
          ++i;
        }
      }
      CalibrationOptions options;
      options.sequences = 16;
      options.seq_len = 128;
      options.importance = importance;
      const CalibrationStats stats = calibrate(transformer, *tokenizer, lines, model_fingerprint(loaded.model), options);
      vector = contribution_vector(stats);
    }
    std::fprintf(stderr, "[bench] statistics vector: %zu values (%.1f KB in 32-bit lanes, %.1f KB in 64-bit lanes)\n", vector.size(),
                 vector.size() * 4 / 1e3, vector.size() * 8 / 1e3);
    results["statistics_values"] = vector.size();

    zmq::context_t context(4);
    context.set(zmq::ctxopt::max_sockets, 8192);
    for (const int n : sizes) {
      if (n <= 0) continue;  // --agents 0: heartbeats only
      std::vector<std::unique_ptr<BenchAgent>> agents;
      for (int i = 0; i < n; ++i) agents.push_back(std::make_unique<BenchAgent>(context, fleet, vector));
      std::atomic<bool> stop{false};
      std::vector<std::thread> threads;
      for (auto& agent : agents) {
        threads.emplace_back([&stop, agent = agent.get()] {
          while (!stop && !agent->agent().reported()) agent->step(20);
        });
      }
      const double cpu_before = process_cpu_seconds(fleet.pid);
      const auto start = Clock::now();
      const auto started = coordinator::admin_request(fleet.admin, {{"command", "round.start"},
                                                                    {"settings",
                                                                     {{"model_id", model_id},
                                                                      {"min_agents", n},
                                                                      {"max_agents", n},
                                                                      {"sequences_per_agent", 16},
                                                                      {"seq_len", 128},
                                                                      {"method", "percentile:99.99"},
                                                                      {"lane_bits", requested_lane_bits},
                                                                      {"exports", importance ? nlohmann::json::array({"imatrix"})
                                                                                             : nlohmann::json::array()}}}});
      nlohmann::json status;
      while (true) {
        status = coordinator::admin_request(fleet.admin, {{"command", "round.status"}, {"id", started["round"]}});
        if (status["stage"] == "done" || status["stage"] == "failed") break;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
      }
      const double wall = seconds_since(start);
      const double cpu = process_cpu_seconds(fleet.pid) - cpu_before;
      stop = true;
      for (auto& thread : threads) thread.join();
      if (status["stage"] != "done") fail("round with {} agents failed: {}", n, status.value("failure", std::string()));
      const auto& stages = status["stage_ms"];
      const double secure = (stages.value("sharing", 0.0) + stages.value("masking", 0.0) + stages.value("unmasking", 0.0)) / 1000;
      const uint32_t lane_bits = status["secure_aggregation"].value("lane_bits", 64u);
      const double plain = plain_aggregation_seconds(context, n, vector, lane_bits);
      uint64_t sent = 0, received = 0;
      double agent_cpu = 0, agent_cpu_max = 0;
      for (const auto& agent : agents) {
        sent += agent->agent().bytes_sent;
        received += agent->agent().bytes_received;
        agent_cpu += agent->agent().secagg_cpu_seconds;
        agent_cpu_max = std::max(agent_cpu_max, agent->agent().secagg_cpu_seconds);
      }
      nlohmann::json row = {{"agents", n},
                            {"neighbours", status["secure_aggregation"]["neighbours"]},
                            {"threshold", status["secure_aggregation"]["threshold"]},
                            {"lane_bits", lane_bits},
                            {"round_seconds", wall},
                            {"secure_aggregation_seconds", secure},
                            {"plain_aggregation_seconds", plain},
                            {"secure_vs_plain", secure / plain},
                            {"bytes_sent_per_agent", static_cast<double>(sent) / n},
                            {"bytes_received_per_agent", static_cast<double>(received) / n},
                            {"coordinator_cpu_seconds", cpu},
                            {"coordinator_cpu_ms_per_agent", 1000 * cpu / n},
                            {"agent_secagg_cpu_ms_mean", 1000 * agent_cpu / n},
                            {"agent_secagg_cpu_ms_max", 1000 * agent_cpu_max},
                            {"stage_ms", stages}};
      results["rounds"].push_back(row);
      std::fprintf(stderr,
                   "[bench] %4d agents (k=%d, t=%d, %u-bit lanes): round %.2f s | aggregation secure %.3f s vs plain %.3f s = "
                   "%.2fx | per agent %.0f KB "
                   "up, %.0f KB down | coordinator CPU %.1f ms/agent | agent secagg CPU %.1f ms (max %.1f)\n",
                   n, row["neighbours"].get<int>(), row["threshold"].get<int>(), lane_bits, wall, secure, plain, secure / plain,
                   row["bytes_sent_per_agent"].get<double>() / 1e3, row["bytes_received_per_agent"].get<double>() / 1e3,
                   row["coordinator_cpu_ms_per_agent"].get<double>(), 1000 * agent_cpu / n, 1000 * agent_cpu_max);
      agents.clear();  // they go offline; the next fleet size uses fresh agents
    }

    if (heartbeat_agents > 0) {
      std::fprintf(stderr, "[bench] enrolling %d heartbeating agents...\n", heartbeat_agents);
      std::vector<std::unique_ptr<BenchAgent>> agents;
      for (int i = 0; i < heartbeat_agents; ++i) agents.push_back(std::make_unique<BenchAgent>(context, fleet, vector));
      results["heartbeats"] = measure_heartbeats(fleet, agents, heartbeat_seconds, 0);
      if (flood_threads > 0)
        results["heartbeats_under_flood"] = measure_heartbeats(fleet, agents, heartbeat_seconds, flood_threads);
    }
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fedcal-bench-fleet: %s\n", error.what());
    bench::stop_coordinator(fleet);
    return 1;
  }
  bench::stop_coordinator(fleet);
  fs::remove_all(root);
  if (json) std::printf("%s\n", results.dump(2).c_str());
  return 0;
}
