// fedcal-coordinator serve | db backup | db restore | keys | status | shutdown
#include <fmt/format.h>

#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <memory>
#include <optional>

#include "common/clock.h"
#include "common/error.h"
#include "common/log_line.h"
#include "common/signing.h"
#include "common/systemd_notify.h"
#include "coordinator/cli/commands.h"
#include "coordinator/database_guard.h"
#include "coordinator/server.h"
#include "coordinator/state_lock.h"
#include "transport/curve.h"

namespace fedcal::coordinator {
namespace {

std::atomic<bool> g_stop{false};  // set by SIGINT/SIGTERM; the only state a signal handler may touch
void on_signal(int) { g_stop = true; }
// SIGHUP (a closed terminal, `systemctl reload`) neither stops the daemon nor reloads it; it says so
// with write(2), which a signal handler may call.
void on_hangup(int) {
  static constexpr char kLine[] =
      "[coordinator] SIGHUP ignored: the configuration is read at start; restart the daemon to apply a change\n";
  [[maybe_unused]] const auto written = ::write(STDERR_FILENO, kLine, sizeof(kLine) - 1);
}

// The standby marker of a process still running (open_database_as_leader), or nullopt.
std::optional<nlohmann::json> running_standby(const CoordinatorConfig& config) {
  std::ifstream in(standby_marker_path(config));
  if (!in) return std::nullopt;
  const nlohmann::json marker = nlohmann::json::parse(in, nullptr, false);
  const auto field = [&marker](const char* key) {
    return marker.is_object() ? marker.value(key, nlohmann::json()) : nlohmann::json();
  };
  if (!field("pid").is_number_integer() || !field("database").is_string() || !field("since_ms").is_number_integer())
    return std::nullopt;
  const auto pid = static_cast<pid_t>(marker["pid"].get<int64_t>());
  if (pid <= 0 || ::kill(pid, 0) != 0) return std::nullopt;  // a marker left by a process that is gone
  return marker;
}

}  // namespace

void add_daemon_commands(CLI::App& app, const CliContext& context) {
  CLI::App* serve = app.add_subcommand("serve", "Run the coordinator daemon (creates keys and database on first start)");
  auto new_database = std::make_shared<bool>(false);
  serve->add_flag("--new-database", *new_database,
                  "Start with an empty database although the state folder holds keys or artifacts of an earlier start "
                  "(refused without it: restore a backup instead, see `db restore`)");
  serve->callback([&context, new_database] {
    std::signal(SIGINT, on_signal);
    std::signal(SIGTERM, on_signal);
    std::signal(SIGHUP, on_hangup);
    CoordinatorConfig config = context.load();
    config.allow_new_database = *new_database;
    // On a PostgreSQL database shared by several coordinators, a standby until this one leads.
    // (SQLite: one coordinator per state folder, which the server opens after taking its lock.)
    std::unique_ptr<SqlConnection> database;
    if (config.uses_postgres()) {
      SystemdNotifier systemd;
      database = open_database_as_leader(
          config, 1000, [] { return g_stop.load(); },
          [&systemd](const std::string& line) {
            write_log(LogLevel::kInfo, "coordinator", line);
            systemd.ready();  // a standby is up (systemd would otherwise time its start out)
            systemd.status(line);
          },
          [&systemd] { systemd.keep_alive(steady_ms()); });
      if (!database) return;  // stopped while a standby
    }
    Server server(config, std::move(database));
    server.run(g_stop);
  });

  CLI::App* db = app.add_subcommand("db", "The coordinator's database: backups and restore")->require_subcommand(1);
  db->add_subcommand("backup", "A consistent copy of the database now, while the daemon runs (STATE/backups)")
      ->callback([&context] {
        const auto reply = context.call({{"command", "db.backup"}});
        context.print(reply, fmt::format("backed up to {} ({} bytes)\n", reply["backup"].get<std::string>(),
                                         reply["bytes"].get<int64_t>()));
      });
  auto restore_from = std::make_shared<std::string>();
  CLI::App* restore = db->add_subcommand(
      "restore", "Replace the database with a backup (the daemon must be stopped; the replaced files are kept beside it)");
  restore->add_option("backup", *restore_from, "A backup file (STATE/backups/coordinator-*.db)")->required()->check(CLI::ExistingFile);
  restore->callback([&context, restore_from] {
    const CoordinatorConfig config = context.load();
    // A daemon holds the state folder's lock for its life, also while stopped (SIGSTOP) and silent.
    const StateLock lock(config.state_dir, "fedcal-coordinator db restore");
    const std::string replaced = restore_database(config, *restore_from);
    context.print({{"restored", *restore_from}, {"replaced", replaced}},
                  fmt::format("restored {} into {}{}\n", *restore_from, config.database_name(),
                              replaced.empty() ? "" : "; the replaced database is kept as " + replaced));
  });

  CLI::App* keys = app.add_subcommand("keys", "Print the coordinator's CURVE public key (agents need it) and signing public key");
  keys->callback([&context] {
    const CoordinatorConfig config = context.load();
    const CurveKeyPair curve = CurveKeyPair::read(config.curve_key_path());
    const SigningKey signing = SigningKey::read_private_key(config.signing_key_path());
    context.print({{"curve_public_key", curve.public_key}, {"signing_public_key", signing.public_key_hex()}},
                  fmt::format("CURVE public key:   {}\nsigning public key: {}\n", curve.public_key, signing.public_key_hex()));
  });

  app.add_subcommand("status", "The running daemon: its address and keys, agents online, the round, the metrics and status page")
      ->callback([&context] {
        nlohmann::json status;
        try {
          status = context.call({{"command", "status"}});
        } catch (const Error&) {
          // No admin socket: a standby on a shared PostgreSQL database says so in its state folder.
          const std::optional<nlohmann::json> standby = running_standby(context.load());
          if (!standby) throw;
          context.print(*standby, fmt::format("standby (pid {}): another coordinator leads {}; waiting since {}\n",
                                              (*standby)["pid"].get<int64_t>(), (*standby)["database"].get<std::string>(),
                                              format_utc_time((*standby)["since_ms"].get<int64_t>())));
          return;
        }
        const auto text = [&status](const char* key) { return status.value(key, std::string()); };
        std::string out = fmt::format("listening on {} ({} agent connections, {} agents online)\n", text("listen"),
                                      status.value("agent_connections", 0), status.value("online_agents", 0));
        out += fmt::format("CURVE public key:   {}\nsigning public key: {}\n", text("curve_public_key"), text("signing_public_key"));
        out += status["round"].is_number() ? fmt::format("round {} running\n", status["round"].get<int64_t>()) : "no round running\n";
        out += text("metrics").empty() ? "metrics and status page: off (metrics_listen)\n"
                                       : fmt::format("metrics: {}\nstatus page: {}\n", text("metrics"), text("status_page"));
        out += fmt::format("audit entries: {}\n", status.value("audit_entries", 0));
        context.print(status, out);
      });

  app.add_subcommand("shutdown", "Stop the running daemon")->callback([&context] {
    context.print(context.call({{"command", "shutdown"}}), "stopping\n");
  });
}

}  // namespace fedcal::coordinator
