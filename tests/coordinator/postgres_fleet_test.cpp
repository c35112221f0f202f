// The coordinator daemon on PostgreSQL (database_url), with real processes: a server of the test's own
// (tests/postgres_server.h), a coordinator and agents on loopback.
#include <doctest/doctest.h>

#include <unistd.h>

#include <filesystem>
#include <optional>

#include "common/file_util.h"
#include "tests/coordinator/mini_fleet.h"
#include "tests/postgres_server.h"

namespace fedcal::testing {
namespace {

// A fleet of `agents` whose coordinator keeps its database at `url`.
FleetOptions on_postgres(const std::string& url, int agents) {
  FleetOptions options;
  options.agents = agents;
  options.coordinator_extra = "database_url = \"" + url + "\"\n";
  return options;
}

TEST_CASE(
    "Coordinator on PostgreSQL: enrollment, a round, db backup and restore (a later revocation holds), and an empty "
    "database beside the keys refused" *
    doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  PostgresServer postgres;
  const std::string url = postgres.create_database();
  MiniFleet fleet(on_postgres(url, 3));
  fleet.start_coordinator();
  fleet.start_agents();
  const int64_t model = fleet.import_model();
  const nlohmann::json first = fleet.run_round(round_settings(model));
  REQUIRE_MESSAGE(first["stage"] == "done", first.dump(2));
  CHECK(first["contributors"] == 3);
  // Everything is in PostgreSQL: no SQLite file in the state folder.
  CHECK_FALSE(std::filesystem::exists(fleet.coordinator_dir() + "/coordinator.db"));
  CHECK(postgres.psql("fedcal_1", "SELECT count(*) FROM agents") == "3\n");
  CHECK(postgres.psql("fedcal_1", "SELECT stage FROM rounds WHERE id = 1") == "done\n");

  const std::string backup = fleet.admin({{"command", "db.backup"}})["backup"].get<std::string>();
  CHECK(backup.size() > 7);
  CHECK(backup.substr(backup.size() - 7) == ".pgdump");
  // After the backup: an agent revoked and a second round.
  const int64_t revoked = fleet.agent_id(2);
  fleet.admin({{"command", "agents.revoke"}, {"id", revoked}});
  const nlohmann::json second = fleet.run_round(round_settings(model, 2));
  REQUIRE_MESSAGE(second["stage"] == "done", second.dump(2));

  fleet.kill_coordinator();
  const auto restore = run_command(
      built_binary("fedcal-coordinator") + " --config " + fleet.path("coordinator.toml") + " db restore " + backup, true);
  REQUIRE_MESSAGE(restore.exit_code == 0, restore.output);
  CHECK(postgres.psql("fedcal_1", "SELECT count(*) FROM rounds") == "1\n");  // round 2 is gone with the restore ...
  fleet.start_coordinator();
  // ... the revocation is not (the ledger), and the next round takes id 3, not 2.
  const nlohmann::json listed = fleet.admin({{"command", "agents.list"}});  // kept: the loop reads into it
  for (const auto& agent : listed["agents"]) {
    if (agent["id"] == revoked) CHECK(agent["revoked"] == true);
  }
  REQUIRE(eventually([&] { return fleet.admin({{"command", "status"}})["online_agents"] == 2; }, std::chrono::seconds(30)));
  const nlohmann::json third = fleet.run_round(round_settings(model, 2));
  CHECK_MESSAGE(third["stage"] == "done", third.dump(2));
  CHECK(third["round"] == 3);
  CHECK(third["contributors"] == 2);

  // The same state folder pointed at an empty database: refused, naming it, not started empty.
  fleet.kill_coordinator();
  const std::string empty = postgres.create_database();
  std::string config = read_text_file(fleet.path("coordinator.toml"));
  config.replace(config.find(url), url.size(), empty);
  write_text(fleet.path("empty.toml"), config);
  const auto refused = run_command(built_binary("fedcal-coordinator") + " --config " + fleet.path("empty.toml") + " serve", true);
  CHECK(refused.exit_code != 0);
  CHECK_MESSAGE(
      refused.output.find("fedcal_2?host=" + postgres.socket_dir() + "&user=fedcal holds no fedcal tables") != std::string::npos,
      refused.output);
}

TEST_CASE(
    "Coordinators sharing PostgreSQL: one leads, a second waits as a standby and takes over the registry, the agents and "
    "a rollout in flight when the leader dies, and a leader cut off from the database stops instead of reconnecting" *
    doctest::timeout(180) * doctest::test_suite("fleet robustness")) {
  PostgresServer postgres;
  const std::string url = postgres.create_database();
  MiniFleet fleet(on_postgres(url, 2));
  fleet.start_coordinator();
  // The agents know the standby's address too (standby_coordinators).
  const std::string standby_endpoint = "tcp://127.0.0.1:" + std::to_string(20000 + (getpid() % 12000));
  for (int i = 0; i < 2; ++i) fleet.start_agent(i, "standby_coordinators = [\"" + standby_endpoint + "\"]");
  fleet.wait_online(2);

  // The standby: its own state folder with the leader's keys (agents trust those), the same database.
  namespace fs = std::filesystem;
  fs::create_directories(fleet.path("standby"));
  for (const char* file : {"curve.key", "signing.key", "signing.key.pub"}) {
    fs::copy_file(fleet.coordinator_dir() + "/" + file, fleet.path(std::string("standby/") + file));
  }
  // The leader's artifact store is the standby's too (shared storage, at the same path).
  write_text(fleet.path("standby.toml"), "listen = \"" + standby_endpoint + "\"\nstate_dir = \"standby\"\ndatabase_url = \"" +
                                             url + "\"\nheartbeat_interval_ms = 300\nagent_timeout_ms = 1500\n" +
                                             "artifacts_dir = \"coordinator/artifacts\"\n");
  Process standby({built_binary("fedcal-coordinator"), "--config", fleet.path("standby.toml"), "serve"},
                  fleet.path("standby.log"));
  REQUIRE(eventually(
      [&] { return read_text_file(fleet.path("standby.log")).find("standby: another coordinator leads") != std::string::npos; },
      std::chrono::seconds(20)));
  const std::string standby_admin = built_binary("fedcal-coordinator") + " --config " + fleet.path("standby.toml") + " --json ";
  // Not serving while a standby, and `status` says so (its state folder's standby.json, its pid alive).
  const auto waiting = run_command(standby_admin + "status", true);
  REQUIRE_MESSAGE(waiting.exit_code == 0, waiting.output);
  CHECK(nlohmann::json::parse(waiting.output)["role"] == "standby");
  CHECK(nlohmann::json::parse(waiting.output)["pid"] == standby.pid());
  CHECK(standby.running());

  // A rollout in two waves with a soak between them: the leader dies once the first wave switched.
  const int64_t model = fleet.import_model();
  const std::string sha = fleet.admin({{"command", "models.list"}})["models"][0]["sha256"].get<std::string>();
  fleet.admin({{"command", "rollout.start"},
               {"settings",
                {{"model_id", model}, {"waves", {50.0, 100.0}}, {"max_slowdown", 50.0}, {"max_kl", 50.0}, {"soak_ms", 4000}}}});
  const auto switched = [&](const nlohmann::json& agents) {
    int count = 0;
    for (const auto& agent : agents["agents"]) count += agent["active_model"] == sha ? 1 : 0;
    return count;
  };
  REQUIRE(eventually([&] { return switched(fleet.admin({{"command", "agents.list"}})) == 1; }, std::chrono::seconds(60)));
  REQUIRE(fleet.admin({{"command", "rollout.status"}})["stage"] == "running");

  // The leader dies: the standby leads, with the registry the leader kept.
  fleet.kill_coordinator();
  REQUIRE(eventually([&] { return read_text_file(fleet.path("standby.log")).find("leading ") != std::string::npos; },
                     std::chrono::seconds(20)));
  nlohmann::json listed;
  REQUIRE(eventually(
      [&] {
        const auto result = run_command(standby_admin + "agents list");
        if (result.exit_code != 0) return false;
        listed = nlohmann::json::parse(result.output);
        return true;
      },
      std::chrono::seconds(20)));
  CHECK(listed["agents"].size() == 2);
  CHECK(nlohmann::json::parse(run_command(standby_admin + "status").output)["role"] == "leader");
  CHECK_FALSE(std::filesystem::exists(fleet.path("standby/standby.json")));
  // The agents find it: no word from the old address for coordinator_timeout_ms, then the next one.
  CHECK(eventually(
      [&] {
        const auto result = run_command(standby_admin + "status");
        return result.exit_code == 0 && nlohmann::json::parse(result.output)["online_agents"] == 2;
      },
      std::chrono::seconds(30)));
  CHECK(read_text_file(fleet.path("agent-0/agent.log")).find("trying " + standby_endpoint) != std::string::npos);
  // The rollout goes on where the leader left it (its package read from the shared artifact store):
  // the second wave switches, and it ends done.
  nlohmann::json rollout;
  CHECK(eventually(
      [&] {
        const auto result = run_command(standby_admin + "rollout status");
        if (result.exit_code != 0) return false;
        rollout = nlohmann::json::parse(result.output);
        return rollout["stage"] != "running";
      },
      std::chrono::seconds(60)));
  CHECK_MESSAGE(rollout["stage"] == "done", rollout.dump(2));
  CHECK(switched(nlohmann::json::parse(run_command(standby_admin + "agents list").output)) == 2);

  // Its session cut off by the server (as by a network partition): it stops, naming the database,
  // rather than reconnecting without the lead.
  postgres.psql("fedcal_1",
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = 'fedcal_1' AND pid <> "
                "pg_backend_pid()");
  const std::optional<int> exit_code = standby.wait_exit(std::chrono::seconds(20));
  REQUIRE(exit_code.has_value());
  CHECK(*exit_code != 0);
  CHECK_MESSAGE(read_text_file(fleet.path("standby.log")).find("lost the connection to the database") != std::string::npos,
                read_text_file(fleet.path("standby.log")));
}

}  // namespace
}  // namespace fedcal::testing
