#include "bench/fleet_process.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "common/error.h"
#include "common/file_util.h"
#include "coordinator/admin_client.h"
#include "transport/curve.h"

extern char** environ;

namespace fedcal::bench {

std::string program_dir() { return std::filesystem::read_symlink("/proc/self/exe").parent_path().string(); }

double process_cpu_seconds(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string text((std::istreambuf_iterator<char>(in)), {});
  std::istringstream fields(text.substr(text.rfind(')') + 2));
  std::string field;
  double utime = 0, stime = 0;
  for (int i = 3; i <= 15 && fields >> field; ++i) {
    if (i == 14) utime = std::stod(field);
    if (i == 15) stime = std::stod(field);
  }
  return (utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

double thread_cpu_seconds() {
  timespec now{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &now);
  return static_cast<double>(now.tv_sec) + static_cast<double>(now.tv_nsec) / 1e9;
}

namespace {

// `binary` from the build's bin/ with `args`, stderr to `log`.
pid_t spawn_logged(const std::string& name, const std::vector<std::string>& args, const std::string& log) {
  const std::string binary = program_dir() + "/" + name;
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, STDERR_FILENO, log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> argv{const_cast<char*>(binary.c_str())};
  for (const std::string& arg : args) argv.push_back(const_cast<char*>(arg.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int spawned = posix_spawn(&pid, binary.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (spawned != 0) fail("cannot start {}", binary);
  return pid;
}

void stop_process(pid_t& pid) {
  if (pid <= 0) return;
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  pid = -1;
}

}  // namespace

CoordinatorProcess start_coordinator(const std::string& root, const std::string& extra_config) {
  CoordinatorProcess process;
  process.root = root;
  // Below Linux's default ephemeral range (32768-60999): the benchmarks' own thousands of outgoing
  // connections never hold it.
  const int port = 20000 + static_cast<int>(getpid() % 12000);
  process.endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  write_file_atomically(root + "/coordinator.toml", "listen = \"" + process.endpoint +
                                                        "\"\nstate_dir = \"state\"\nstage_timeout_ms = 300000\n"
                                                        "join_timeout_ms = 300000\n" +
                                                        extra_config);
  process.pid = spawn_logged("fedcal-coordinator", {"--config", root + "/coordinator.toml", "serve"}, root + "/coordinator.log");
  process.admin = root + "/state";
  for (int i = 0; i < 300; ++i) {
    try {
      process.coordinator_key =
          coordinator::admin_request(process.admin, {{"command", "status"}}, 200)["curve_public_key"].get<std::string>();
      return process;
    } catch (const Error&) {
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }
  kill(process.pid, SIGTERM);
  waitpid(process.pid, nullptr, 0);
  fail("the coordinator did not start (see {}/coordinator.log)", root);
}

void stop_coordinator(CoordinatorProcess& process) { stop_process(process.pid); }

std::string create_relay_key(const std::string& root, int index) {
  const std::string dir = fmt::format("{}/relay-{}", root, index);
  std::filesystem::create_directories(dir);
  const CurveKeyPair keys = CurveKeyPair::generate();
  keys.write(dir + "/curve.key");
  return keys.public_key;
}

RelayProcess start_relay(const std::string& root, int index, int port, const std::string& coordinator_relay_endpoint,
                         const std::string& coordinator_key) {
  RelayProcess process;
  const std::string dir = fmt::format("{}/relay-{}", root, index);
  process.public_key = CurveKeyPair::read(dir + "/curve.key").public_key;
  process.endpoint = "tcp://127.0.0.1:" + std::to_string(port);
  write_file_atomically(dir + ".toml",
                        fmt::format("listen = \"{}\"\ncoordinator = \"{}\"\ncoordinator_key = \"{}\"\n"
                                    "state_dir = \"{}\"\ntransport_pings = false\nmax_connections_per_address = 1000000\n",
                                    process.endpoint, coordinator_relay_endpoint, coordinator_key, dir));
  process.pid = spawn_logged("fedcal-relay", {"--config", dir + ".toml", "serve"}, dir + ".log");
  return process;
}

void stop_relay(RelayProcess& process) { stop_process(process.pid); }

}  // namespace fedcal::bench
