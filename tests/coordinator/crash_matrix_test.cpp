// The crash matrix: the coordinator killed in every stage of a round and every phase of a rollout,
// and agents killed at every point, in process (FakeHost::restart reopens the SQLite file and
// disconnects everyone, as a SIGKILL and a restart do; the agents' side answers as the real agent
// does: a restarted agent holds no round and says so). Each scenario runs twice, with and without
// the kill, and the row says whether the outcome is the same or a failure with its reason. The
// tables are compared with docs/DURABILITY.md (FEDCAL_UPDATE_DOCS=1 writes them there).
#include <doctest/doctest.h>

#include <cstdlib>
#include <fstream>
#include <functional>
#include <sstream>

#include "common/file_util.h"
#include "tests/coordinator/rollout_fixture.h"
#include "tests/coordinator/round_fixture.h"
#include "tests/docs_table.h"

namespace fedcal::coordinator {
namespace {

struct Row {
  std::string when;     // the phase the kill hit
  std::string outcome;  // what the machine ended in after the restart
  std::string verdict;  // "same as without the kill" or "failed with the reason"
};

// The crash matrix's table `name` in docs/DURABILITY.md must be `rows`.
void check_docs_table(const std::string& name, const std::vector<Row>& rows) {
  std::vector<std::vector<std::string>> cells;
  for (const Row& row : rows) cells.push_back({row.when, row.outcome, row.verdict});
  fedcal::check_docs_table("docs/DURABILITY.md", name,
                           markdown_table({"killed", "outcome after the restart", "vs. no kill"}, cells));
}

// What a round's outcome is judged by: stage, failure, contributors, reports and the fleet figures.
std::string round_outcome(const Round& round) {
  const nlohmann::json status = round.status();
  if (round.stage() == RoundStage::kFailed) {
    std::string failure = status.value("failure", "");
    return "failed: " + failure.substr(0, failure.find(';'));
  }
  return fmt::format("{}: {} contributors, {} reports", name(round.stage()), status["contributors"].get<int>(),
                     status["reports"].get<int>());
}

// Runs a round to its end: agents answer every stage's message (those in `silent` never do), the
// clock moves 100 ms per step. Bounded: at most 3000 steps (5 minutes of round time).
void run_round(RoundFixture& f, Round& round, const std::set<int64_t>& silent = {}) {
  for (int step = 0; step < 3000 && !round.finished(); ++step) {
    std::set<int64_t> speaking;
    for (const int64_t id : f.ids) {
      if (!silent.count(id) && f.host.online.count(id)) speaking.insert(id);
    }
    if (!speaking.empty()) {
      for (const char* kind : {"roundKeys", "sharesForYou", "unmaskRequest", "roundResult"}) f.answer(round, kind, speaking);
    }
    if (round.stage() == RoundStage::kQuantizing) f.wait_for_quantization(round);
    f.host.now_ms += 100;
    f.tick(round);
  }
  REQUIRE(round.finished());
}

// The coordinator is killed once `round` reaches `stage` (after `before_kill`), restarted, and every
// agent reconnects 500 ms later; then the round runs to its end.
std::string round_with_coordinator_kill(RoundStage stage, const std::function<void(RoundFixture&, Round&)>& before_kill,
                                        bool kill) {
  RoundFixture f(4);
  auto round = f.start();
  if (stage != RoundStage::kCollecting) f.advance_to(*round, stage);
  if (before_kill) before_kill(f, *round);
  if (kill) {
    const int64_t id = round->id();
    round.reset();
    f.host.restart();
    round = Round::recover(f.host, *f.host.store().round(id));
    f.tick(*round);
    f.host.now_ms += 500;
    f.tick(*round);
    for (const int64_t agent : f.ids) {
      f.host.online.insert(agent);
      round->agent_online(agent);
    }
  }
  if (stage == RoundStage::kCollecting && !round->finished()) {
    for (const FakeAgent& agent : f.agents) {
      bool joined = false;
      const nlohmann::json status = round->status();
      for (const auto& entry : status["agents"]) joined = joined || (entry["agent"] == agent.id && entry["state"] == "joined");
      if (!joined) agent.join(*round, round->id());
    }
    f.tick(*round);
  }
  run_round(f, *round);
  return round_outcome(*round);
}

TEST_CASE("Crash matrix: the coordinator killed in every round stage resumes to the same result or fails with the reason") {
  struct Case {
    std::string when;
    RoundStage stage;
    std::function<void(RoundFixture&, Round&)> before_kill;
  };
  const auto one_report = [](RoundFixture& f, Round& round) { f.answer(round, "roundResult", {f.ids[0]}); };
  const auto two_joined = [](RoundFixture& f, Round& round) {
    f.agents[0].join(round, round.id());
    f.agents[1].join(round, round.id());
  };
  const std::vector<Case> cases = {
      {"collecting (2 of 4 joined)", RoundStage::kCollecting, two_joined},
      {"sharing", RoundStage::kSharing, nullptr},
      {"masking", RoundStage::kMasking, nullptr},
      {"unmasking", RoundStage::kUnmasking, nullptr},
      {"quantizing (job running)", RoundStage::kQuantizing, nullptr},
      {"evaluating (no report yet)", RoundStage::kEvaluating, nullptr},
      {"evaluating (1 of 4 reported)", RoundStage::kEvaluating, one_report},
  };
  std::vector<Row> rows;
  for (const Case& c : cases) {
    CAPTURE(c.when);
    const std::string reference = round_with_coordinator_kill(c.stage, c.before_kill, false);
    const std::string outcome = round_with_coordinator_kill(c.stage, c.before_kill, true);
    REQUIRE(reference == "done: 4 contributors, 4 reports");
    const bool same = outcome == reference;
    const bool failed_with_reason = outcome.rfind("failed: the coordinator restarted during stage", 0) == 0;
    CHECK((same || failed_with_reason));
    // Nothing completes by default: the stages that can resume must resume to the same result.
    if (c.stage == RoundStage::kQuantizing || c.stage == RoundStage::kEvaluating) CHECK(same);
    rows.push_back({c.when, outcome, same ? "same" : "failed with the reason"});
  }
  check_docs_table("round-coordinator-kills", rows);
}

TEST_CASE("Crash matrix: an evaluating round after a restart waits for its agents to return, then for their reports") {
  RoundFixture f(3);
  auto round = f.start();
  f.advance_to(*round, RoundStage::kEvaluating);
  f.answer(*round, "roundResult", {f.ids[0]});
  const int64_t id = round->id();
  round.reset();
  f.host.restart();
  round = Round::recover(f.host, *f.host.store().round(id));
  f.tick(*round);
  CHECK(round->stage() == RoundStage::kEvaluating);  // was: done within milliseconds with 0 reports
  CHECK(round->status()["reports"] == 1);             // the report received before the kill is kept
  SUBCASE("no agent comes back: after agent_timeout_ms the round ends with the report it has") {
    f.host.now_ms += f.host.config().agent_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kDone);
    CHECK(round->status()["reports"] == 1);
  }
  SUBCASE("no report at all and nobody back: failed with the reason, not done") {
    f.host.restart();
    f.host.store().set_participant_status(id, f.ids[0], ParticipantStatus::kRevealed);  // as if it never reported
    round = Round::recover(f.host, *f.host.store().round(id));
    f.host.now_ms += f.host.config().agent_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kFailed);
    CHECK(f.failure(*round).find("no participant reported its check") == 0);
  }
}

// An agent is killed (and restarted at once, holding nothing of the round) when the round reaches
// `stage`; returns the outcome and how long (round time) the stage waited after it came back.
std::pair<std::string, int64_t> round_with_agent_kill(RoundStage stage) {
  RoundFixture f(4);
  auto round = f.start();
  const int64_t victim = f.ids[3];
  if (stage == RoundStage::kCollecting) {
    // Killed before it joined: it comes back and is announced again; it joins this time.
    f.host.online.erase(victim);
    for (int i = 0; i < 3; ++i) f.agents[static_cast<size_t>(i)].join(*round, round->id());
    f.host.online.insert(victim);
    round->agent_online(victim);
    f.agents[3].join(*round, round->id());
    f.tick(*round);
    run_round(f, *round);
    return {round_outcome(*round), 0};
  }
  f.advance_to(*round, stage);
  // Back at once, without the round: every round message it gets is answered with roundLeave
  // (notInRound), which is what Agent::holds_round sends.
  const int64_t left_at = f.host.now_ms;
  round->leave(victim, "notInRound", "'...' for a round this agent does not hold (it restarted or left it)");
  int64_t waited = 0;
  for (int step = 0; step < 3000 && !round->finished(); ++step) {
    for (const char* kind : {"roundKeys", "sharesForYou", "unmaskRequest", "roundResult"}) {
      f.host.take(victim, kind);  // never answered
      f.answer(*round, kind, {f.ids[0], f.ids[1], f.ids[2]});
    }
    if (round->stage() == RoundStage::kQuantizing) f.wait_for_quantization(*round);
    const RoundStage before = round->stage();
    f.host.now_ms += 100;
    f.tick(*round);
    if (round->stage() != before && waited == 0) waited = f.host.now_ms - left_at;
  }
  REQUIRE(round->finished());
  return {round_outcome(*round), waited};
}

TEST_CASE("Crash matrix: an agent killed at every point of a round, the round does not wait for it") {
  std::vector<Row> rows;
  const std::pair<RoundStage, const char*> cases[] = {
      {RoundStage::kCollecting, "before joining (back at once)"},
      {RoundStage::kSharing, "after joining, before sharing keys"},
      {RoundStage::kMasking, "after sharing keys, before its masked input"},
      {RoundStage::kUnmasking, "after its masked input, before unmasking"},
      {RoundStage::kEvaluating, "before its report"},
  };
  for (const auto& entry : cases) {
    const RoundStage stage = entry.first;
    const char* when = entry.second;
    CAPTURE(when);
    const auto result = round_with_agent_kill(stage);
    const std::string& outcome = result.first;
    const int64_t waited = result.second;
    // A known-dead participant ends its part at once: the stage moves on at the next tick, not at a deadline.
    CHECK(waited <= 100);
    // Before its masked input it is a dropout; after it, its statistics are in the sum.
    if (stage == RoundStage::kCollecting) {
      CHECK(outcome == "done: 4 contributors, 4 reports");
    } else if (stage == RoundStage::kUnmasking || stage == RoundStage::kEvaluating) {
      CHECK(outcome == "done: 4 contributors, 3 reports");
    } else {
      CHECK(outcome == "done: 3 contributors, 3 reports");
    }
    rows.push_back({std::string("agent ") + when, outcome, "the round goes on without it (dropout)"});
  }
  rows.front().verdict = "same";
  check_docs_table("round-agent-kills", rows);
}

// A rollout of 5 agents in waves of 40% and 100%: every agent reports healthy (or, with
// `unhealthy`, agent 0 reports a KL over the limit); the coordinator is killed after `before_kill`.
struct RolloutRun {
  std::string outcome;
  bool gate_waited_full_soak = true;  // after the restart, no wave passed before a whole soak
};

RolloutRun rollout_with_coordinator_kill(const std::function<void(RolloutFixture&, Rollout&)>& before_kill, bool kill,
                                         bool unhealthy) {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  auto rollout = f.start();
  const auto report_all_told = [&] {
    for (const int64_t agent : f.told("modelActivate")) f.report(*rollout, agent, true, agent == f.ids[0] && unhealthy ? 1.0 : 0.001);
    for (const int64_t agent : f.told("modelRollback")) f.report_rolled_back(*rollout, agent);
  };
  before_kill(f, *rollout);
  RolloutRun run;
  if (kill) {
    const int64_t id = rollout->id();
    const int wave = rollout->status()["wave"];
    const bool running = rollout->stage() == RolloutStage::kRunning;
    rollout.reset();
    f.host.restart();
    Store::RolloutRecord record;
    for (const auto& stored : f.host.store().rollouts()) {
      if (stored.id == id) record = stored;
    }
    rollout = Rollout::recover(f.host, record);
    rollout->tick();
    f.host.now_ms += 500;
    rollout->tick();
    for (const int64_t agent : f.ids) {
      f.host.online.insert(agent);
      const std::string status = f.status_of(*rollout, agent);
      const bool switched = status == "healthy" || status == "unhealthy" || status == "rolling_back";
      rollout->agent_online(agent, switched ? kRolloutSha : "previous-sha");
    }
    // The gate is judged only after a whole soak from the restart.
    report_all_told();
    f.host.now_ms += f.settings.soak_ms - 600;
    rollout->tick();
    run.gate_waited_full_soak = !running || (rollout->status()["wave"] == wave && rollout->stage() == RolloutStage::kRunning);
  }
  for (int step = 0; step < 200 && rollout->stage() == RolloutStage::kRunning; ++step) {
    report_all_told();
    f.host.now_ms += 100;
    rollout->tick();
  }
  report_all_told();
  const nlohmann::json status = rollout->status();
  std::string counts;
  for (const auto& [state, count] : status["counts"].items()) counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", count.get<int>(), state);
  run.outcome = fmt::format("{} ({})", name(rollout->stage()), counts);
  return run;
}

TEST_CASE("Crash matrix: the coordinator killed in every rollout phase, no health gate is skipped") {
  struct Case {
    std::string when;
    bool unhealthy;
    std::function<void(RolloutFixture&, Rollout&)> before_kill;
  };
  const auto wave1_reported = [](RolloutFixture& f, Rollout& rollout, bool unhealthy) {
    f.told("modelActivate");
    f.report(rollout, f.ids[0], true, unhealthy ? 1.0 : 0.001);
    f.report(rollout, f.ids[1], true);
  };
  const std::vector<Case> cases = {
      {"wave 1 downloading / self-testing (no report)", false, [](RolloutFixture&, Rollout&) {}},
      {"wave 1 soaking (reported healthy, half the soak)", false,
       [&](RolloutFixture& f, Rollout& rollout) {
         wave1_reported(f, rollout, false);
         f.host.now_ms += f.settings.soak_ms / 2;
         rollout.tick();
       }},
      {"wave 1 soaking, one agent over the KL limit", true,
       [&](RolloutFixture& f, Rollout& rollout) {
         wave1_reported(f, rollout, true);
         f.host.now_ms += f.settings.soak_ms / 2;
         rollout.tick();
       }},
      {"wave 1 gate due (soak over, not yet judged)", false,
       [&](RolloutFixture& f, Rollout& rollout) {
         wave1_reported(f, rollout, false);
         f.host.now_ms += f.settings.soak_ms;
       }},
      {"wave 2 sent, no report yet", false,
       [&](RolloutFixture& f, Rollout& rollout) {
         wave1_reported(f, rollout, false);
         f.host.now_ms += f.settings.soak_ms;
         rollout.tick();
         REQUIRE(rollout.status()["wave"] == 1);
       }},
      {"rolling back (orders sent, no answer yet)", true,
       [&](RolloutFixture& f, Rollout& rollout) {
         wave1_reported(f, rollout, true);
         f.host.now_ms += f.settings.soak_ms;
         rollout.tick();
         REQUIRE(rollout.stage() == RolloutStage::kRolledBack);  // the orders sent now are lost with the kill
       }},
  };
  std::vector<Row> rows;
  for (const Case& c : cases) {
    CAPTURE(c.when);
    const RolloutRun reference = rollout_with_coordinator_kill(c.before_kill, false, c.unhealthy);
    const RolloutRun killed = rollout_with_coordinator_kill(c.before_kill, true, c.unhealthy);
    CHECK(killed.outcome == reference.outcome);
    CHECK(killed.gate_waited_full_soak);
    CHECK(reference.outcome == (c.unhealthy ? "rolled_back (3 pending, 2 rolled_back)" : "done (5 healthy)"));
    rows.push_back({c.when, killed.outcome, killed.outcome == reference.outcome ? "same" : "DIFFERENT"});
  }
  check_docs_table("rollout-coordinator-kills", rows);
}

// Agent 0 (wave 1) is killed at `point` and restarts at once: it says hello with the package it has
// active and the unclean exits it counted since activating it, as the real agent does.
enum class AgentKillPoint { kNone, kDownloading, kSelfTesting, kAfterSwitch, kSoaking, kRollingBack };

std::string rollout_with_agent_kill(AgentKillPoint point, bool unhealthy_wave) {
  RolloutFixture f(5);
  f.settings.waves = {40, 100};
  auto rollout = f.start();
  const int64_t victim = f.ids[0];
  const auto restart_victim = [&](bool switched) {
    f.host.online.erase(victim);
    rollout->tick();
    f.host.online.insert(victim);
    rollout->agent_online(victim, switched ? kRolloutSha : "previous-sha", switched ? 1u : 0u);
  };
  f.told("modelActivate");
  if (point == AgentKillPoint::kDownloading || point == AgentKillPoint::kSelfTesting) {
    restart_victim(false);  // the download resumes / the self-test runs again after the restart
    CHECK(f.told("modelActivate") == std::vector<int64_t>{victim});
  }
  if (point == AgentKillPoint::kAfterSwitch) restart_victim(true);  // switched, killed before its report
  if (point != AgentKillPoint::kAfterSwitch) f.report(*rollout, victim, true);
  f.report(*rollout, f.ids[1], true, unhealthy_wave ? 1.0 : 0.001);
  if (point == AgentKillPoint::kSoaking) {
    f.host.now_ms += f.settings.soak_ms / 2;
    rollout->tick();
    restart_victim(true);
  }
  for (int step = 0; step < 200 && rollout->stage() == RolloutStage::kRunning; ++step) {
    for (const int64_t agent : f.told("modelActivate")) f.report(*rollout, agent, true);
    f.host.now_ms += 100;
    rollout->tick();
  }
  std::vector<int64_t> ordered = f.told("modelRollback");
  if (point == AgentKillPoint::kRollingBack && !ordered.empty()) {
    restart_victim(true);  // killed before it switched back: told again when it returns
    const std::vector<int64_t> again = f.told("modelRollback");
    CHECK(again == std::vector<int64_t>{victim});
  }
  for (const int64_t agent : ordered) f.report_rolled_back(*rollout, agent);
  const nlohmann::json status = rollout->status();
  std::string counts;
  for (const auto& [state, count] : status["counts"].items())
    counts += fmt::format("{}{} {}", counts.empty() ? "" : ", ", count.get<int>(), state);
  return fmt::format("{} ({})", name(rollout->stage()), counts);
}

TEST_CASE("Crash matrix: an agent killed at every point of a rollout catches up, or its crash fails the gate") {
  struct Case {
    const char* when;
    AgentKillPoint point;
    bool unhealthy_wave;
    const char* verdict;
  };
  const Case cases[] = {
      {"agent downloading the package", AgentKillPoint::kDownloading, false, "same"},
      {"agent self-testing the package", AgentKillPoint::kSelfTesting, false, "same"},
      {"agent after switching, before its report", AgentKillPoint::kAfterSwitch, false,
       "rolled back: an unclean exit of the new model fails the gate (by design)"},
      {"agent soaking (reported healthy)", AgentKillPoint::kSoaking, false,
       "rolled back: an unclean exit of the new model fails the gate (by design)"},
      {"agent ordered to roll back, before switching back", AgentKillPoint::kRollingBack, true, "same"},
  };
  std::vector<Row> rows;
  for (const Case& c : cases) {
    CAPTURE(c.when);
    const std::string reference = rollout_with_agent_kill(AgentKillPoint::kNone, c.unhealthy_wave);
    const std::string outcome = rollout_with_agent_kill(c.point, c.unhealthy_wave);
    CHECK(reference == (c.unhealthy_wave ? "rolled_back (3 pending, 2 rolled_back)" : "done (5 healthy)"));
    if (std::string(c.verdict) == "same") {
      CHECK(outcome == reference);
    } else {
      CHECK(outcome.rfind("rolled_back", 0) == 0);
    }
    rows.push_back({c.when, outcome, c.verdict});
  }
  check_docs_table("rollout-agent-kills", rows);
}

}  // namespace
}  // namespace fedcal::coordinator
