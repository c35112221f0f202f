// The round state machine in process: a FakeHost (real SQLite store and artifacts, a hand-moved
// clock, decoded outgoing messages) and agents that run the real secure-aggregation client. Every
// stage transition, deadline and dropout path, each test in well under a second (the quantization
// job is real; it takes ~0.1 s on the project's model).
#include <doctest/doctest.h>

#include <chrono>
#include <map>
#include <thread>

#include "coordinator/round.h"
#include "secagg/secagg_wire.h"
#include "tests/coordinator/fake_host.h"
#include "tests/coordinator/forged_report.h"
#include "tests/coordinator/round_fixture.h"

namespace fedcal::coordinator {
namespace {

using testing::FakeHost;

TEST_CASE("Round in process: every stage in order, done with every agent's report") {
  RoundFixture f(4);
  auto round = f.start();
  CHECK(round->stage() == RoundStage::kCollecting);
  for (const FakeAgent& agent : f.agents) agent.join(*round, round->id());
  f.tick(*round);  // every announced agent joined
  CHECK(round->stage() == RoundStage::kSharing);
  CHECK(f.answer(*round, "roundKeys") == 4);
  f.tick(*round);
  CHECK(round->stage() == RoundStage::kMasking);
  CHECK(f.answer(*round, "sharesForYou") == 4);
  f.tick(*round);
  CHECK(round->stage() == RoundStage::kUnmasking);
  CHECK(f.answer(*round, "unmaskRequest") == 4);
  // The unmasking runs on a worker thread: the event loop's tick returns at once, the round stays in
  // its stage (and keeps answering messages), and a later tick takes the sum.
  round->tick();
  CHECK(round->aggregating());
  CHECK(round->stage() == RoundStage::kUnmasking);
  f.tick(*round);
  CHECK_FALSE(round->aggregating());
  CHECK(round->stage() == RoundStage::kQuantizing);
  // The aggregate is the sum of the four contributions.
  const auto aggregate = f.host.store().aggregate_path(round->id());
  REQUIRE(aggregate);
  const CalibrationStats sum = read_stats(*aggregate);
  CHECK(sum.sequences == 4 * f.agents[0].input[f.agents[0].input.size() - 2]);
  f.wait_for_quantization(*round);
  REQUIRE(round->stage() == RoundStage::kEvaluating);
  CHECK(f.answer(*round, "roundResult") == 4);
  f.tick(*round);
  CHECK(round->stage() == RoundStage::kDone);
  CHECK(f.host.store().round(round->id())->stage == RoundStage::kDone);
  const nlohmann::json report = round->status();
  CHECK(report["reports"] == 4);
  CHECK(report["checks"]["fleet"]["agents"] == 4);
  CHECK(report["statistics_sha256"] == sum.sha256());  // what fedcal-sim-fleet checks its plain sum against
  for (const char* stage : {"collecting", "sharing", "masking", "unmasking", "quantizing", "evaluating"}) {
    CHECK(report["stage_ms"].contains(stage));
  }
}

TEST_CASE("Round in process: smoothing or a target KL without the coordinator's reference text is refused at start") {
  RoundFixture f(3);
  REQUIRE(f.host.config().reference_text.empty());
  f.settings.smooth = true;
  CHECK_THROWS_WITH_AS(f.start(), doctest::Contains("smooth measures on public reference text: set reference_text"), Error);
  f.settings.smooth = false;
  f.settings.target_kl = "dynamic";
  CHECK_THROWS_WITH_AS(f.start(), doctest::Contains("target_kl measures on public reference text"), Error);
  CHECK(f.host.store().rounds().empty());  // nothing persisted, nothing announced
}

TEST_CASE("Round in process: max_agents reached starts sharing at once, without waiting for the others") {
  RoundFixture f(5);
  f.settings.max_agents = 3;
  auto round = f.start();
  for (int i = 0; i < 3; ++i) f.agents[i].join(*round, round->id());
  CHECK(round->stage() == RoundStage::kSharing);
  // A join after that is late, not wrong: not taken, and its agent is told the round went on without it.
  f.agents[3].join(*round, round->id());
  CHECK(round->status()["joined"] == 3);
  const auto told = f.host.take(f.ids[3], "roundAbort");
  REQUIRE(told.size() == 1);
  CHECK(std::string(told[0].body().getRoundAbort().getReason().cStr()).find("joined after stage 'collecting'") !=
        std::string::npos);
}

TEST_CASE("Round in process: the join deadline starts sharing with the agents that joined, or fails with too few") {
  SUBCASE("enough joined") {
    RoundFixture f(4);
    auto round = f.start();
    for (int i = 0; i < 3; ++i) f.agents[i].join(*round, round->id());
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kCollecting);  // the fourth is online and may still join
    f.host.now_ms += f.host.config().join_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kSharing);
    CHECK(f.host.take(f.ids[3], "roundKeys").empty());
  }
  SUBCASE("too few joined") {
    RoundFixture f(4);
    auto round = f.start();
    for (int i = 0; i < 2; ++i) f.agents[i].join(*round, round->id());
    f.host.now_ms += f.host.config().join_timeout_ms - 1;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kCollecting);
    f.host.now_ms += 1;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kFailed);
    CHECK(f.failure(*round) == "only 2 agents joined; the round needs at least 3");
    CHECK(f.host.store().round(round->id())->failure == f.failure(*round));
    CHECK(f.host.take(f.ids[0], "roundAbort").size() == 1);
  }
}

TEST_CASE("Round in process: an agent that goes offline is not waited for, at the deadline the stage moves on") {
  RoundFixture f(5);
  auto round = f.start();
  for (const FakeAgent& agent : f.agents) agent.join(*round, round->id());
  f.tick(*round);
  REQUIRE(round->stage() == RoundStage::kSharing);
  SUBCASE("dropped in sharing (offline): the others go on") {
    f.answer(*round, "roundKeys", {f.ids[0], f.ids[1], f.ids[2], f.ids[3]});
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kSharing);  // agent 5 is online and may still answer
    f.host.online.erase(f.ids[4]);
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kMasking);
    CHECK(f.host.take(f.ids[4], "sharesForYou").empty());
  }
  SUBCASE("silent in sharing until the deadline") {
    f.answer(*round, "roundKeys", {f.ids[0], f.ids[1], f.ids[2], f.ids[3]});
    f.host.now_ms += f.host.config().stage_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kMasking);
  }
  SUBCASE("too few shared by the deadline") {
    f.answer(*round, "roundKeys", {f.ids[0], f.ids[1]});
    f.host.now_ms += f.host.config().stage_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kFailed);
    CHECK(f.failure(*round) == "only 2 agents shared their keys; the round needs at least 3");
  }
  SUBCASE("too few masked by the deadline") {
    f.answer(*round, "roundKeys");
    f.tick(*round);
    f.answer(*round, "sharesForYou", {f.ids[0], f.ids[1]});
    f.host.now_ms += f.host.config().stage_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kFailed);
    CHECK(f.failure(*round) == "only 2 agents sent masked statistics; the aggregate of fewer than 3 is never unmasked");
  }
  SUBCASE("one agent drops after masking: unmasking recovers its masks, the sum has the other four") {
    f.answer(*round, "roundKeys");
    f.tick(*round);
    f.answer(*round, "sharesForYou", {f.ids[0], f.ids[1], f.ids[2], f.ids[3]});
    f.host.online.erase(f.ids[4]);
    f.tick(*round);
    REQUIRE(round->stage() == RoundStage::kUnmasking);
    for (const auto& participant : f.host.store().participants(round->id())) {
      CHECK(participant.status == (participant.agent_id == f.ids[4] ? ParticipantStatus::kDropped : ParticipantStatus::kMasked));
    }
    CHECK(f.answer(*round, "unmaskRequest") == 4);
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kQuantizing);
    CHECK(round->status()["contributors"] == 4);
  }
  SUBCASE("too few reveal by the deadline: the aggregate is never unmasked") {
    f.answer(*round, "roundKeys");
    f.tick(*round);
    f.answer(*round, "sharesForYou");
    f.tick(*round);
    f.answer(*round, "unmaskRequest", {f.ids[0]});
    f.host.now_ms += f.host.config().stage_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kFailed);
    CHECK(f.failure(*round).find("secure aggregation could not be completed") == 0);
    CHECK_FALSE(f.host.store().aggregate_path(round->id()));
  }
}

TEST_CASE("Round in process: evaluation ends when every online evaluator reported, or at its deadline") {
  RoundFixture f(3);
  auto round = f.start();
  f.advance_to(*round, RoundStage::kEvaluating);
  f.answer(*round, "roundResult", {f.ids[0]});
  SUBCASE("an offline evaluator is not waited for, and gets the result when it returns") {
    f.host.online.erase(f.ids[2]);
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kEvaluating);  // agent 2 is online and has not reported
    f.answer(*round, "roundResult", {f.ids[1]});
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kDone);
    CHECK(round->status()["reports"] == 2);
  }
  SUBCASE("the report deadline") {
    f.host.now_ms += f.host.config().report_timeout_ms;
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kDone);
    CHECK(round->status()["reports"] == 1);
  }
  SUBCASE("forged figures move the fleet's figures by one agent's share only; foreign and repeated labels are refused") {
    const auto report_with = [&](std::initializer_list<const char*> labels, uint64_t tokens, double kl, double top1) {
      OutgoingMessage message;
      testing::forged_local_report(message, round->id(), labels, tokens, kl, top1);
      f.agents[1].deliver(*round, message);
    };
    CHECK_THROWS_WITH(report_with({"fleet", "fleet"}, 100, 0.01, 0.9), doctest::Contains("'fleet' checked twice"));
    CHECK_THROWS_WITH(report_with({"group:pi4"}, 100, 0.01, 0.9), doctest::Contains("was not sent a 'group:pi4' package"));
    // Figures no real check produces are refused, so a forger's share of a mean is bounded.
    CHECK_THROWS_WITH(report_with({"fleet"}, uint64_t{1000000000000000000}, 0.0, 1.0), doctest::Contains("tokens checked"));
    CHECK_THROWS_WITH(report_with({"fleet"}, 100, 1e300, 1.0), doctest::Contains("out of range"));
    CHECK_THROWS_WITH(report_with({"fleet"}, 100, 0.0, 1.5), doctest::Contains("out of range"));
    report_with({"fleet"}, kMaxReportedTokens, 0.0, 1.0);  // the most tokens, KL 0, top-1 1.0: within bounds
    f.answer(*round, "roundResult", {f.ids[2]});
    f.tick(*round);
    REQUIRE(round->stage() == RoundStage::kDone);
    const nlohmann::json fleet = round->status()["checks"]["fleet"];
    CHECK(fleet["agents"] == 3);
    CHECK(fleet["mean_kl"].get<double>() == doctest::Approx((0.01 + 0.0 + 0.01) / 3));
    CHECK(fleet["top1_agreement"].get<double>() == doctest::Approx((0.9 + 1.0 + 0.9) / 3));
  }
  SUBCASE("speeds are the median over agents with their range: a forged speed-up moves the median not at all") {
    // Agents 0 and 2 decode at 200 vs 100 tokens/s (round_fixture); agent 1 claims a million-fold speed-up.
    OutgoingMessage spread_too_wide;
    testing::forged_local_report(spread_too_wide, round->id(), {"fleet"}, 100, 0.01, 0.9, {1e6, 1, 101});
    CHECK_THROWS_WITH(f.agents[1].deliver(*round, spread_too_wide), doctest::Contains("localReport.decodeSpread"));
    OutgoingMessage forged;
    testing::forged_local_report(forged, round->id(), {"fleet"}, 100, 0.01, 0.9, {1e6, 1, 0.5});
    f.agents[1].deliver(*round, forged);
    f.answer(*round, "roundResult", {f.ids[2]});
    f.tick(*round);
    REQUIRE(round->stage() == RoundStage::kDone);
    const nlohmann::json fleet = round->status()["checks"]["fleet"];
    CHECK(fleet["decode_speedup"].get<double>() == doctest::Approx(2.0));
    CHECK(fleet["decode_speedup_range"][0].get<double>() == doctest::Approx(2.0));
    CHECK(fleet["decode_speedup_range"][1].get<double>() == doctest::Approx(1e6));
    CHECK(fleet["decode_tokens_per_second_int8"].get<double>() == doctest::Approx(200));
    CHECK(fleet["decode_tokens_per_second_fp32"].get<double>() == doctest::Approx(100));
    CHECK(fleet["decode_run_spread"].get<double>() == doctest::Approx(0.0));  // the median agent's runs did not swing
    CHECK(fleet["decode_speedup_noisy"] == false);
  }
  SUBCASE("a speed-up whose median run-to-run spread is above +-25% is flagged noisy") {
    // Agent 0 reported steady runs (the fixture); agents 1 and 2 swing, so the median agent swings.
    for (const size_t agent : {size_t{1}, size_t{2}}) {
      OutgoingMessage swinging;
      testing::forged_local_report(swinging, round->id(), {"fleet"}, 100, 0.01, 0.9, {3, 1, 4.18});
      f.agents[agent].deliver(*round, swinging);
    }
    f.tick(*round);
    REQUIRE(round->stage() == RoundStage::kDone);
    const nlohmann::json fleet = round->status()["checks"]["fleet"];
    CHECK(fleet["decode_run_spread"].get<double>() == doctest::Approx(4.18));
    CHECK(fleet["decode_speedup_noisy"] == true);
  }
  SUBCASE("a second report is dropped (the first stands), a report from a stranger is refused") {
    const nlohmann::json first = round->status()["checks"];
    OutgoingMessage again;
    again.body().initLocalReport().setRoundId(static_cast<uint64_t>(round->id()));
    f.agents[0].deliver(*round, again);  // re-sent, or a late copy: not the agent's fault
    CHECK(round->status()["checks"] == first);
    FakeAgent stranger{999, {}, SecAggClient()};
    CHECK_THROWS_WITH(stranger.deliver(*round, again), doctest::Contains("is not a participant"));
  }
}

TEST_CASE("Round in process: an agent that cannot take part says so, and no stage waits for it") {
  RoundFixture f(4);
  auto round = f.start();
  SUBCASE("no private text: it declines the announcement, and collecting ends when the others joined") {
    round->leave(f.ids[3], "noPrivateText", "/data: no text");
    for (int i = 0; i < 3; ++i) f.agents[static_cast<size_t>(i)].join(*round, round->id());
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kSharing);  // at once, not at the join deadline
    const nlohmann::json status = round->status();
    bool named = false;
    for (const auto& agent : status["agents"]) {
      if (agent["agent"] == f.ids[3]) {
        named = agent["state"] == "declined" && agent["cause"] == "noPrivateText" && agent["reason"] == "/data: no text";
      }
    }
    CHECK(named);
  }
  SUBCASE("a participant that restarted (its hello holds no round) is a dropout at once") {
    f.advance_to(*round, RoundStage::kSharing);
    round->agent_online(f.ids[3], /*held_round=*/0);
    f.answer(*round, "roundKeys", {f.ids[0], f.ids[1], f.ids[2]});
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kMasking);
    CHECK(f.host.store().participants(round->id())[3].status == ParticipantStatus::kDropped);
    CHECK(f.host.store().participants(round->id())[3].reason.find("notInRound") == 0);
  }
  SUBCASE("every evaluator leaves: the round fails with the reason instead of waiting for the report deadline") {
    f.advance_to(*round, RoundStage::kEvaluating);
    for (const int64_t id : f.ids) round->leave(id, "diskFull", "No space left on device");
    f.tick(*round);
    CHECK(round->stage() == RoundStage::kFailed);
    CHECK(f.failure(*round) == "no participant reported its check of the result (4 of 4 left, the others are offline)");
    CHECK(round->status()["contributors"] == 4);
  }
}

TEST_CASE("Round in process: messages out of stage, for another round or from non-participants are refused") {
  RoundFixture f(4);
  auto round = f.start();
  CHECK_THROWS_WITH(f.agents[0].join(*round, round->id() + 1), doctest::Contains("is not the active round"));
  f.agents[0].join(*round, round->id());
  f.agents[0].join(*round, round->id());  // a copy (re-sent until acknowledged): dropped
  CHECK(round->status()["joined"] == 1);
  OutgoingMessage rejoin;  // the same agent with other keys: a different join, refused
  const AdvertisedKeys other = SecAggClient().advertise();
  auto second = rejoin.body().initJoin();
  second.setRoundId(static_cast<uint64_t>(round->id()));
  second.setCipherPublic(as_data(other.cipher_public));
  second.setMaskPublic(as_data(other.mask_public));
  second.setVectorLength(f.agents[0].input.size());
  CHECK_THROWS_WITH(f.agents[0].deliver(*round, rejoin), doctest::Contains("already joined round 1 with other keys"));
  // A join with low-order keys would make every neighbour's key agreement fail: refused, not joined.
  OutgoingMessage low_order;
  auto join = low_order.body().initJoin();
  join.setRoundId(static_cast<uint64_t>(round->id()));
  join.setCipherPublic(as_data(Key32{}));
  join.setMaskPublic(as_data(Key32{}));
  join.setVectorLength(f.agents[1].input.size());
  CHECK_THROWS_WITH(f.agents[1].deliver(*round, low_order), doctest::Contains("a low-order X25519 public key"));
  CHECK(round->status()["joined"] == 1);
  OutgoingMessage shares;
  shares.body().initShareKeys().setRoundId(static_cast<uint64_t>(round->id()));
  CHECK_THROWS_WITH(f.agents[0].deliver(*round, shares), doctest::Contains("not expected in stage 'collecting'"));
}

TEST_CASE("Round in process: the operator's abort fails the round from any stage and tells the agents") {
  RoundFixture f(3);
  auto round = f.start();
  for (const FakeAgent& agent : f.agents) agent.join(*round, round->id());
  f.tick(*round);
  REQUIRE(round->stage() == RoundStage::kSharing);
  round->fail_round("aborted by the operator");
  CHECK(round->stage() == RoundStage::kFailed);
  CHECK(f.host.store().round(round->id())->stage == RoundStage::kFailed);
  for (const int64_t id : f.ids) CHECK(f.host.take(id, "roundAbort").size() == 1);
  f.tick(*round);  // a finished round does nothing
  CHECK(round->stage() == RoundStage::kFailed);
}

TEST_CASE("Round in process: after a restart, quantizing and evaluating resume, a secure stage fails with the reason") {
  RoundFixture f(3);
  auto round = f.start();
  for (const FakeAgent& agent : f.agents) agent.join(*round, round->id());
  f.tick(*round);
  SUBCASE("a secure stage") {
    auto recovered = Round::recover(f.host, *f.host.store().round(round->id()));
    CHECK(recovered->stage() == RoundStage::kFailed);
    CHECK(f.failure(*recovered).find("the coordinator restarted during stage 'sharing'") == 0);
  }
  SUBCASE("quantizing and evaluating") {
    f.advance_to(*round, RoundStage::kQuantizing);
    // A restart while the job runs: the recovered round runs the job again from the stored aggregate.
    auto resumed = Round::recover(f.host, *f.host.store().round(round->id()));
    CHECK(resumed->stage() == RoundStage::kQuantizing);
    f.wait_for_quantization(*resumed);
    CHECK(resumed->stage() == RoundStage::kEvaluating);
    for (const int64_t id : f.ids) CHECK(f.host.take(id, "roundResult").size() == 1);
    f.host.sent.clear();
    auto again = Round::recover(f.host, *f.host.store().round(round->id()));
    CHECK(again->stage() == RoundStage::kEvaluating);
    for (const int64_t id : f.ids) CHECK(f.host.take(id, "roundResult").size() == 1);  // told again
  }
}

}  // namespace
}  // namespace fedcal::coordinator
