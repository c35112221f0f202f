#include "tests/coordinator/mini_fleet.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "coordinator/admin_client.h"
#include "transport/curve.h"

extern char** environ;

namespace fedcal::testing {

Process::Process(const std::vector<std::string>& argv, const std::string& log_path) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  std::vector<char*> args;
  for (const std::string& arg : argv) args.push_back(const_cast<char*>(arg.c_str()));
  args.push_back(nullptr);
  const int rc = posix_spawn(&pid_, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) throw std::runtime_error("cannot start " + argv[0]);
}

Process::~Process() {
  if (running()) {
    ::kill(pid_, SIGKILL);
    wait_exit(std::chrono::seconds(10));
  }
}

void Process::signal(int signal_number) {
  if (!exit_code_) ::kill(pid_, signal_number);
}

bool Process::running() { return !wait_exit(std::chrono::milliseconds(0)).has_value(); }

std::optional<int> Process::wait_exit(std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!exit_code_) {
    int status = 0;
    const pid_t done = ::waitpid(pid_, &status, WNOHANG);
    if (done == pid_) {
      exit_code_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return exit_code_;
}

namespace {

// A port below Linux's default ephemeral range (32768-60999), so outgoing connections never hold it.
int random_listen_port() {
  std::random_device random;
  return 20000 + static_cast<int>(random() % 12000);
}

}  // namespace

nlohmann::json round_settings(int64_t model, int min_agents) {
  return {{"model_id", model},       {"min_agents", min_agents},     {"sequences_per_agent", kRoundSequences},
          {"seq_len", kRoundSeqLen}, {"method", "percentile:99.99"}, {"per_channel", true}};
}

nlohmann::json result_model(const nlohmann::json& report, const std::string& label) {
  for (const auto& entry : report.value("models", nlohmann::json::array())) {
    if (entry.value("label", std::string()) == label) return entry;
  }
  throw std::runtime_error("the round made no '" + label + "' package: " + report.dump());
}

bool eventually(const std::function<bool()>& predicate, std::chrono::milliseconds timeout) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (true) {
    if (predicate()) return true;
    if (std::chrono::steady_clock::now() >= deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
}

MiniFleet::MiniFleet(FleetOptions options) : options_(options) {
  port_ = random_listen_port();
  // Shards of the training split's non-empty lines, in order.
  std::istringstream train(tinystories_train());
  std::string line;
  shards_.resize(static_cast<size_t>(options_.agents));
  size_t agent = 0;
  std::vector<std::string> rest;
  while (std::getline(train, line)) {
    if (line.empty()) continue;
    if (agent < shards_.size()) {
      shards_[agent].push_back(line);
      if (shards_[agent].size() == static_cast<size_t>(options_.lines_per_agent)) ++agent;
    } else if (rest.size() < 200) {
      rest.push_back(line);
    }
  }
  std::ostringstream config;
  config << "state_dir = \"coordinator\"\n"
         << "heartbeat_interval_ms = 300\n"
         << "agent_timeout_ms = " << options_.agent_timeout_ms << "\n"
         << "stage_timeout_ms = " << options_.stage_timeout_ms << "\n"
         << "join_timeout_ms = 60000\nreport_timeout_ms = 60000\n"
         << "join_grace_ms = " << options_.join_grace_ms << "\n";
  if (options_.capture) config << "capture_file = \"capture.bin\"\n";
  if (options_.max_message_bytes > 0) config << "max_message_bytes = " << options_.max_message_bytes << "\n";
  if (options_.chunk_bytes > 0) config << "chunk_bytes = " << options_.chunk_bytes << "\n";
  config << options_.coordinator_extra << "\n";
  if (options_.reference_text) {
    std::string text;
    for (const std::string& public_line : rest) text += public_line + "\n";
    write_text(dir_.path("public.txt"), text);
    config << "reference_text = \"public.txt\"\n";
  }
  if (options_.relayed_agents > 0) {
    std::filesystem::create_directories(dir_.path("relay"));
    const CurveKeyPair relay_keys = CurveKeyPair::generate();
    relay_keys.write(dir_.path("relay/curve.key"));
    relay_key_ = relay_keys.public_key;
    relay_port_ = random_listen_port();
    relay_upstream_port_ = random_listen_port();
    config << "relays = [\"" << relay_key_ << "\""
           << (options_.other_relay_key.empty() ? "" : ", \"" + options_.other_relay_key + "\"") << "]\n"
           << "relay_listen = \"tcp://127.0.0.1:" << relay_upstream_port_ << "\"\n";
  }
  coordinator_settings_ = config.str();
}

MiniFleet::~MiniFleet() {
  for (auto& [i, agent] : agents_) agent->signal(SIGTERM);
  if (coordinator_) coordinator_->signal(SIGTERM);
  if (relay_) relay_->signal(SIGTERM);
  for (auto& [i, agent] : agents_) agent->wait_exit(std::chrono::seconds(5));
  if (coordinator_) coordinator_->wait_exit(std::chrono::seconds(5));
  if (relay_) relay_->wait_exit(std::chrono::seconds(5));
}

void MiniFleet::start_coordinator() {
  for (int attempt = 1;; ++attempt) {
    const std::string fault = options_.coordinator_fault_injection.empty()
                                  ? ""
                                  : "fault_injection = \"" + options_.coordinator_fault_injection + "\"\n";
    write_text(dir_.path("coordinator.toml"),
               "listen = \"tcp://127.0.0.1:" + std::to_string(port_) + "\"\n" + fault + coordinator_settings_);
    if (try_start_coordinator()) {
      if (options_.relayed_agents > 0 && !relay_) start_relay();
      return;
    }
    std::ifstream log(dir_.path("coordinator.log"));
    const std::string text(std::istreambuf_iterator<char>(log), {});
    // Another test's coordinator or an outgoing connection may hold the port: before any agent was
    // configured with it, take another.
    if (attempt < 5 && agents_.empty() && text.find("Address already in use") != std::string::npos) {
      port_ = random_listen_port();
      continue;
    }
    throw std::runtime_error("the coordinator did not start: " + text);
  }
}

bool MiniFleet::try_start_coordinator() {
  std::vector<std::string> argv{built_binary("fedcal-coordinator"), "--config", dir_.path("coordinator.toml"), "serve"};
  if (options_.coordinator_file_limit > 0) {
    // Hard and soft limit both, so the daemon cannot raise it.
    argv.insert(argv.begin(),
                {"/bin/sh", "-c", "ulimit -n " + std::to_string(options_.coordinator_file_limit) + " && exec \"$@\"", "sh"});
  }
  argv.insert(argv.begin(), options_.coordinator_launcher.begin(), options_.coordinator_launcher.end());
  std::filesystem::remove(dir_.path("coordinator/admin.json"));  // a previous start's: its port is gone
  coordinator_ = std::make_unique<Process>(argv, dir_.path("coordinator.log"));
  bool up = false;
  eventually(
      [&] {
        try {
          coordinator_key_ = admin({{"command", "status"}})["curve_public_key"].get<std::string>();
          up = true;
        } catch (const std::exception&) {
        }
        return up || !coordinator_->running();  // a coordinator that could not listen has exited
      },
      std::chrono::seconds(20));
  if (!up) {
    coordinator_->signal(SIGKILL);
    coordinator_->wait_exit(std::chrono::seconds(10));
  }
  return up;
}

void MiniFleet::start_relay() {
  write_text(dir_.path("relay.toml"), "listen = \"tcp://127.0.0.1:" + std::to_string(relay_port_) + "\"\n" +
                                          "coordinator = \"tcp://127.0.0.1:" +
                                          std::to_string(relay_via_port_ != 0 ? relay_via_port_ : relay_upstream_port_) + "\"\n" +
                                          "coordinator_key = \"" + coordinator_key_ + "\"\nstate_dir = \"relay\"\n" +
                                          "presence_interval_ms = 300\ncoordinator_timeout_ms = 3000\n" +
                                          (options_.capture ? "capture_file = \"relay-capture.bin\"\n" : ""));
  relay_ = std::make_unique<Process>(
      std::vector<std::string>{built_binary("fedcal-relay"), "--config", dir_.path("relay.toml"), "serve"},
      dir_.path("relay.log"));
}

void MiniFleet::kill_coordinator() {
  coordinator_->signal(SIGKILL);
  coordinator_->wait_exit(std::chrono::seconds(10));
}

nlohmann::json MiniFleet::admin(const nlohmann::json& request, int timeout_ms) {
  return coordinator::admin_request(dir_.path("coordinator"), request, timeout_ms);
}

void MiniFleet::start_agent(int i, const std::string& extra, const std::vector<std::string>& launcher) {
  const std::string root = dir_.path("agent-" + std::to_string(i));
  std::filesystem::create_directories(root + "/text");
  std::string text;
  for (const std::string& line : shards_.at(static_cast<size_t>(i))) text += line + "\n";
  write_text(root + "/text/private.txt", text);
  const std::string token = admin({{"command", "token.create"}})["token"].get<std::string>();
  std::ofstream config(root + "/agent.toml");
  const bool relayed = i < options_.relayed_agents;
  config << "coordinator = \"tcp://127.0.0.1:"
         << (relayed ? (relayed_agents_via_port_ != 0 ? relayed_agents_via_port_ : relay_port_) : port_) << "\"\n"
         << "coordinator_key = \"" << (relayed ? relay_key_ : coordinator_key_) << "\"\n"
         << "state_dir = \"state\"\ndata_dir = \"text\"\n"
         << "name = \"test-agent-" << i << "\"\n"
         << "threads = 1\n"
         << (extra.find("eval_max_tokens") == std::string::npos ? "eval_max_tokens = 256\n" : "")  // unless `extra` sets it
         << "decode_tokens = 8\n"
         << "coordinator_timeout_ms = " << options_.agent_coordinator_timeout_ms << "\n"
         << "heldout_fraction = " << options_.heldout_fraction << "\n"
         << "enroll_token = \"" << token << "\"\n"
         << extra << "\n";
  config.close();
  std::vector<std::string> argv = launcher.empty() ? std::vector<std::string>{built_binary("fedcal-agent")} : launcher;
  argv.insert(argv.end(), {"--config", root + "/agent.toml", "run"});
  agents_[i] = std::make_unique<Process>(argv, root + "/agent.log");
}

int64_t MiniFleet::agent_id(int i) {
  const nlohmann::json agents = admin({{"command", "agents.list"}});
  for (const auto& agent : agents["agents"]) {
    if (agent["name"] == "test-agent-" + std::to_string(i)) return agent["id"].get<int64_t>();
  }
  throw std::runtime_error("agent " + std::to_string(i) + " is not enrolled");
}

void MiniFleet::start_agents() {
  for (int i = 0; i < options_.agents; ++i) start_agent(i);
  wait_online(static_cast<size_t>(options_.agents));
}

void MiniFleet::wait_online(size_t count, std::chrono::seconds timeout) {
  const bool ok = eventually(
      [&] {
        size_t online = 0;
        const nlohmann::json agents =
            admin({{"command", "agents.list"}});  // named: a range-for over a temporary's member dangles
        for (const auto& agent : agents["agents"]) online += agent["online"].get<bool>() ? 1 : 0;
        return online >= count;
      },
      timeout);
  if (!ok) {
    std::ifstream coordinator_log(dir_.path("coordinator.log")), agent_log(dir_.path("agent-0/agent.log"));
    const std::string coordinator_text{std::istreambuf_iterator<char>(coordinator_log), {}};
    const std::string agent_text{std::istreambuf_iterator<char>(agent_log), {}};
    throw std::runtime_error("agents did not come online: " + admin({{"command", "agents.list"}}).dump() +
                             "\ncoordinator log:\n" + coordinator_text + "\nagent 0 log:\n" + agent_text);
  }
}

int64_t MiniFleet::import_model() {
  const std::string model = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";
  return import_model(model + "/model.bin", model + "/tokenizer.bin");
}

int64_t MiniFleet::import_model(const std::string& path, const std::string& tokenizer) {
  nlohmann::json request = {{"command", "models.import"}, {"path", path}};
  if (!tokenizer.empty()) request["tokenizer"] = tokenizer;
  const nlohmann::json reply = admin(request, 30000);
  if (!reply.contains("id")) throw std::runtime_error("import of " + path + " failed: " + reply.dump());
  return reply["id"].get<int64_t>();
}

nlohmann::json MiniFleet::wait_round(int64_t id, std::chrono::seconds timeout) {
  nlohmann::json status;
  const bool over = eventually(
      [&] {
        status = admin({{"command", "round.status"}, {"id", id}});
        const std::string stage = status["stage"].get<std::string>();
        return stage == "done" || stage == "failed";
      },
      timeout);
  if (!over) throw std::runtime_error("round did not finish: " + status.dump());
  return status;
}

nlohmann::json MiniFleet::run_round(nlohmann::json settings, std::chrono::seconds timeout) {
  const auto started = admin({{"command", "round.start"}, {"settings", settings}});
  return wait_round(started["round"].get<int64_t>(), timeout);
}

nlohmann::json MiniFleet::run_rollout(nlohmann::json settings, std::chrono::seconds timeout) {
  admin({{"command", "rollout.start"}, {"settings", std::move(settings)}});
  nlohmann::json status;
  const bool over = eventually(
      [&] {
        status = admin({{"command", "rollout.status"}});
        return status["stage"] != "running";
      },
      timeout);
  if (!over) throw std::runtime_error("rollout did not finish: " + status.dump());
  return status;
}

std::string MiniFleet::calibration_text(int i, int sequences) const {
  const auto& shard = shards_.at(static_cast<size_t>(i));
  const auto heldout = static_cast<size_t>(static_cast<double>(shard.size()) * options_.heldout_fraction);
  const size_t calibration = std::min(shard.size() - heldout, static_cast<size_t>(sequences));
  std::string text;
  for (size_t line = 0; line < calibration; ++line) text += shard[line] + "\n";
  return text;
}

}  // namespace fedcal::testing
