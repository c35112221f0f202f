// The rollout state machine in process (FakeHost: real SQLite store, a hand-moved clock, decoded
// outgoing messages): waves, soak, health gates, wave deadlines, rollback, offline agents catching
// up, crashes, pause/resume/abort and recovery from the stored snapshot.
#include <doctest/doctest.h>
#include <fmt/format.h>

#include <algorithm>

#include "coordinator/rollout.h"
#include "tests/coordinator/fake_host.h"
#include "tests/coordinator/rollout_fixture.h"

namespace fedcal::coordinator {
namespace {

using testing::FakeHost;

TEST_CASE("Rollout in process: waves of 20/60/100%, each gated after its soak, then done") {
  RolloutFixture f(10);
  auto rollout = f.start();
  CHECK(f.told("modelActivate") == std::vector<int64_t>{f.ids[0], f.ids[1]});
  f.report(*rollout, f.ids[0], true);
  rollout->tick();
  CHECK(rollout->status()["wave"] == 0);  // agent 2 has not reported
  f.report(*rollout, f.ids[1], true);
  rollout->tick();
  CHECK(rollout->status()["wave"] == 0);  // soaking
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(rollout->status()["wave"] == 1);
  CHECK(f.told("modelActivate") == std::vector<int64_t>{f.ids[2], f.ids[3], f.ids[4], f.ids[5]});
  for (int i = 2; i < 6; ++i) f.report(*rollout, f.ids[i], true);
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(f.told("modelActivate").size() == 4);
  for (int i = 6; i < 10; ++i) f.report(*rollout, f.ids[i], true);
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(rollout->stage() == RolloutStage::kDone);
  CHECK(f.host.store().rollouts().back().stage == RolloutStage::kDone);
  CHECK(rollout->status()["counts"]["healthy"] == 10);
}

TEST_CASE("Rollout in process: a wave that fails its gate rolls back every updated agent, and the rest never get it") {
  RolloutFixture f(10);
  auto rollout = f.start();
  f.told("modelActivate");
  SUBCASE("KL above the limit") { f.report(*rollout, f.ids[0], true, /*kl=*/1.0); }
  SUBCASE("slower than allowed") { f.report(*rollout, f.ids[0], true, 0.001, /*speed=*/10, /*before=*/100); }
  SUBCASE("activation failed") { f.report(*rollout, f.ids[0], false); }
  f.report(*rollout, f.ids[1], true);
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(rollout->stage() == RolloutStage::kRolledBack);
  CHECK(rollout->status()["reason"].get<std::string>().find("wave 1 failed its health gate: 1 of 2") == 0);
  const std::vector<int64_t> rolled_back = f.told("modelRollback");
  CHECK(std::count(rolled_back.begin(), rolled_back.end(), f.ids[1]) == 1);
  CHECK(f.told("modelActivate").empty());
  CHECK(f.host.store().rollouts().back().stage == RolloutStage::kRolledBack);
  // Rolled back, the agents keep the figures their gate judged (was: zeros from the rollback's report).
  f.report_rolled_back(*rollout, f.ids[1]);
  const nlohmann::json status = rollout->status();
  const nlohmann::json& kept = status["agents"][1]["report"];
  CHECK(status["agents"][1]["status"] == "rolled_back");
  CHECK(kept["mean_kl"] == 0.001);
  CHECK(kept["tokens_per_second"] == 100);
  CHECK(kept["rolled_back"] == true);
}

TEST_CASE("Rollout in process: a wave nobody reports on rolls back at its deadline, offline agents are not waited for") {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  f.host.online.erase(f.ids[1]);  // offline: not sent, not waited for
  auto rollout = f.start();
  CHECK(f.told("modelActivate") == std::vector<int64_t>{f.ids[0]});
  SUBCASE("the deadline") {
    f.host.now_ms += f.settings.wave_timeout_ms - 1;
    rollout->tick();
    CHECK(rollout->stage() == RolloutStage::kRunning);
    f.host.now_ms += 1;
    rollout->tick();
    CHECK(rollout->stage() == RolloutStage::kRolledBack);
    CHECK(rollout->status()["reason"] == "no agent of wave 1 reported within 10000 ms");
  }
  SUBCASE("the offline agent catches up when it returns; the gate does not wait for it") {
    f.report(*rollout, f.ids[0], true);
    f.host.now_ms += f.settings.soak_ms;
    rollout->tick();
    CHECK(rollout->status()["wave"] == 1);
    f.host.online.insert(f.ids[1]);
    rollout->agent_online(f.ids[1], "previous-sha");
    const std::vector<int64_t> told = f.told("modelActivate");
    CHECK(std::count(told.begin(), told.end(), f.ids[1]) == 1);
  }
}

TEST_CASE("Rollout in process: agents offline at the start of their wave are activated when they return, also those that "
          "have the package already") {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  f.host.online.clear();  // e.g. a rollout started just after a coordinator restart, before the agents reconnected
  auto rollout = f.start();
  CHECK(f.told("modelActivate").empty());
  for (const int64_t id : f.ids) {
    f.host.online.insert(id);
    rollout->agent_online(id, id == f.ids[0] ? kRolloutSha : "previous-sha");  // agent 0 has it from an earlier rollout
  }
  CHECK(f.told("modelActivate") == std::vector<int64_t>{f.ids[0], f.ids[1]});
  f.report(*rollout, f.ids[0], true);
  f.report(*rollout, f.ids[1], true);
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(rollout->status()["wave"] == 1);
}

TEST_CASE(
    "Rollout in process: one agent's failing report cannot veto the rollout (min_failing 2): it is named and counted, "
    "two failing agents roll back") {
  RolloutFixture f(5);
  f.settings.min_failing = 2;
  f.settings.waves = {40, 100};
  auto rollout = f.start();
  f.report(*rollout, f.ids[0], true, /*kl=*/1.0);  // a hostile agent's report, or a device the fleet disagrees with
  SUBCASE("one failing") {
    f.report(*rollout, f.ids[1], true);
    f.host.now_ms += f.settings.soak_ms;
    rollout->tick();
    REQUIRE(rollout->stage() == RolloutStage::kRunning);
    CHECK(rollout->status()["wave"] == 1);
    const bool named = std::any_of(f.host.logs.begin(), f.host.logs.end(), [&](const std::string& line) {
      return line.find(fmt::format("1 failing agent(s) (fewer than min_failing 2): agent {} (KL 1 > 0.05)", f.ids[0])) !=
             std::string::npos;
    });
    CHECK(named);
    for (int i = 2; i < 5; ++i) f.report(*rollout, f.ids[i], true);
    f.host.now_ms += f.settings.soak_ms;
    rollout->tick();
    CHECK(rollout->stage() == RolloutStage::kDone);
    CHECK(f.told("modelRollback").empty());
    // The fleet contradicted its report: counted against it, once per rollout.
    CHECK(f.host.store().agent(f.ids[0])->contradicting_reports == 1);
    CHECK(f.host.store().agent(f.ids[0])->last_contradiction.find("KL 1 > 0.05") != std::string::npos);
    CHECK(f.host.store().agent(f.ids[1])->contradicting_reports == 0);
  }
  SUBCASE("two failing") {
    f.report(*rollout, f.ids[1], true, 0.001, /*speed=*/10, /*before=*/100);
    f.host.now_ms += f.settings.soak_ms;
    rollout->tick();
    CHECK(rollout->stage() == RolloutStage::kRolledBack);
    const std::string reason = rollout->status()["reason"].get<std::string>();
    CHECK(reason.find(fmt::format("failing: agent {} (KL 1 > 0.05), agent {} (10.00x slower > 1.5x)", f.ids[0], f.ids[1])) !=
          std::string::npos);
  }
}

TEST_CASE("Rollout in process: a report checked against the FP32 original is judged on that KL, not on the previous model's") {
  RolloutFixture f(2);
  f.settings.waves = {100};
  auto rollout = f.start();
  f.report(*rollout, f.ids[0], true, /*kl=*/7.0, 100, 100, /*fp32_kl=*/0.002);  // a repair: far from the broken previous model
  SUBCASE("both close to FP32") {
    f.report(*rollout, f.ids[1], true, 7.0, 100, 100, 0.003);
    f.host.now_ms += f.settings.soak_ms;
    rollout->tick();
    CHECK(rollout->stage() == RolloutStage::kDone);
  }
  SUBCASE("one far from FP32, with no previous model to compare with") {
    f.report(*rollout, f.ids[1], true, 0, 100, /*before=*/0, /*fp32_kl=*/5.0);
    f.host.now_ms += f.settings.soak_ms;
    rollout->tick();
    CHECK(rollout->stage() == RolloutStage::kRolledBack);
    CHECK(rollout->status()["reason"].get<std::string>().find(fmt::format("agent {} (KL vs FP32 5 > 0.05)", f.ids[1])) !=
          std::string::npos);
  }
}

TEST_CASE("Rollout in process: an agent that crashed since activating makes its wave unhealthy") {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  auto rollout = f.start();
  f.report(*rollout, f.ids[0], true);
  f.report(*rollout, f.ids[1], true);
  rollout->agent_online(f.ids[1], kRolloutSha, /*crashes=*/1);
  CHECK(f.status_of(*rollout, f.ids[1]) == "unhealthy");
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(rollout->stage() == RolloutStage::kRolledBack);
}

TEST_CASE("Rollout in process: pause holds the gate, resume goes on, abort ends it, refusals name the stage") {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  auto rollout = f.start();
  f.report(*rollout, f.ids[0], true);
  f.report(*rollout, f.ids[1], true);
  rollout->pause();
  CHECK_THROWS_WITH(rollout->pause(), doctest::Contains("is paused, not running"));
  f.host.now_ms += 10 * f.settings.wave_timeout_ms;
  rollout->tick();
  CHECK(rollout->stage() == RolloutStage::kPaused);
  CHECK(rollout->status()["wave"] == 0);
  rollout->resume();
  f.host.now_ms += f.settings.soak_ms;
  rollout->tick();
  CHECK(rollout->status()["wave"] == 1);
  rollout->abort();
  CHECK(rollout->stage() == RolloutStage::kAborted);
  CHECK_THROWS_WITH(rollout->abort(), doctest::Contains("already aborted"));
}

TEST_CASE("Rollout in process: recovered from its stored snapshot with stage, wave, statuses and reports") {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  auto rollout = f.start();
  f.report(*rollout, f.ids[0], true, 0.002);
  rollout->pause();
  const auto recovered = Rollout::recover(f.host, f.host.store().rollouts().back());
  CHECK(recovered->stage() == RolloutStage::kPaused);
  CHECK(f.status_of(*recovered, f.ids[0]) == "healthy");
  CHECK(f.status_of(*recovered, f.ids[1]) == "sent");
  CHECK(f.status_of(*recovered, f.ids[4]) == "pending");
  CHECK(recovered->status()["agents"][0]["report"]["mean_kl"] == 0.002);
  CHECK(recovered->status() == rollout->status());
  // A finished rollout's listing is built from the same rows.
  CHECK(Rollout::stored_status(f.host, f.host.store().rollouts().back()) == rollout->status());
}

TEST_CASE("Rollout in process: a hello or report saves one target's row, and a snapshot of an older version still recovers") {
  RolloutFixture f(5);
  auto rollout = f.start();
  SqlConnection& database = f.host.store().database();
  const int64_t before = database.statements_run();
  f.report(*rollout, f.ids[0], true, 0.002);
  // The report's own writes (the agent's active model) and the save: the rollout row and one target row.
  CHECK(database.statements_run() - before <= 5);
  CHECK(f.host.store().rollout_targets(rollout->id())[0].status == "healthy");
  CHECK(f.host.store().rollouts().back().state_json == R"({"wave":0})");  // not a snapshot of every target

  // A rollout saved before targets had rows: its state JSON held them all.
  const Store::RolloutRecord stored = f.host.store().rollouts().back();
  nlohmann::json legacy = rollout->status();
  database.execute("DELETE FROM rollout_targets");
  database.execute("UPDATE rollouts SET state_json = ? WHERE id = ?", {legacy.dump(), stored.id});
  const auto recovered = Rollout::recover(f.host, f.host.store().rollouts().back());
  CHECK(recovered->status()["agents"] == rollout->status()["agents"]);
  recovered->pause();  // saves: the targets become rows
  CHECK(f.host.store().rollout_targets(rollout->id()).size() == 5);
}

}  // namespace
}  // namespace fedcal::coordinator
