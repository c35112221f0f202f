#include "tests/postgres_server.h"

#include <fmt/format.h>
#include <pwd.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

namespace fedcal::testing {
namespace fs = std::filesystem;

std::string postgres_bin_dir() {
  std::error_code error;
  std::string best;
  int best_version = -1;
  for (const auto& entry : fs::directory_iterator("/usr/lib/postgresql", error)) {
    const std::string version = entry.path().filename().string();
    if (!fs::exists(entry.path() / "bin" / "initdb", error) || version.empty()) continue;
    const int number = std::atoi(version.c_str());
    if (number > best_version) {
      best_version = number;
      best = (entry.path() / "bin").string();
    }
  }
  return best;
}

PostgresServer::PostgresServer() {
  bin_dir_ = postgres_bin_dir();
  if (bin_dir_.empty())
    throw std::runtime_error(
        "no PostgreSQL server in /usr/lib/postgresql: install Debian's `postgresql` (deploy/install-deps.sh)");
  std::string pattern = (fs::temp_directory_path() / "fedcal-pg-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) throw std::runtime_error("cannot create a scratch folder for PostgreSQL");
  root_ = pattern;
  data_dir_ = root_ + "/data";
  socket_dir_ = root_;
  as_root_ = geteuid() == 0;
  if (as_root_) {
    const passwd* user = getpwnam("postgres");
    if (user == nullptr) throw std::runtime_error("running as root and there is no `postgres` user to run the server as");
    if (chown(root_.c_str(), user->pw_uid, user->pw_gid) != 0) throw std::runtime_error("cannot hand " + root_ + " to postgres");
  }
  // Tests' settings: no fsync (the scratch folder goes anyway), no TCP, a socket of its own.
  const CommandResult init = run_command(
      as_server_user(fmt::format("{}/initdb --no-sync -A trust -U fedcal -E UTF8 --locale=C -D {}", bin_dir_, data_dir_)), true);
  if (init.exit_code != 0) throw std::runtime_error("initdb failed: " + init.output);
  std::ofstream(data_dir_ + "/postgresql.conf", std::ios::app)
      << fmt::format("listen_addresses = ''\nunix_socket_directories = '{}'\nfsync = off\nfull_page_writes = off\n", socket_dir_);
  const CommandResult start = run_command(
      as_server_user(fmt::format("{}/pg_ctl -w -t 60 -D {} -l {}/server.log start", bin_dir_, data_dir_, root_)), true);
  if (start.exit_code != 0) throw std::runtime_error("pg_ctl start failed: " + start.output);
}

PostgresServer::~PostgresServer() {
  run_command(as_server_user(fmt::format("{}/pg_ctl -w -D {} -m immediate stop", bin_dir_, data_dir_)), true);
  if (std::getenv("FEDCAL_KEEP_TEST_DIRS") != nullptr) return;
  std::error_code error;
  fs::remove_all(root_, error);
}

std::string PostgresServer::as_server_user(const std::string& command) const {
  if (!as_root_) return command + " 2>&1";
  return fmt::format("cd / && runuser -u postgres -- {} 2>&1", command);
}

std::string PostgresServer::url(const std::string& name) const {
  return fmt::format("postgresql:///{}?host={}&user=fedcal", name, socket_dir_);
}

std::string PostgresServer::create_database() {
  const std::string name = fmt::format("fedcal_{}", ++databases_);
  psql("postgres", "CREATE DATABASE " + name);
  return url(name);
}

std::string PostgresServer::psql(const std::string& name, const std::string& sql) const {
  const CommandResult result = run_command(fmt::format(
      "{}/psql -X -q -A -t -v ON_ERROR_STOP=1 -h {} -U fedcal -d {} -c \"{}\" 2>&1", bin_dir_, socket_dir_, name, sql));
  if (result.exit_code != 0) throw std::runtime_error("psql: " + sql + ": " + result.output);
  return result.output;
}

}  // namespace fedcal::testing
