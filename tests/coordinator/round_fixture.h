// In-process fixtures for the round state machine: agents that answer every stage with the real
// secure-aggregation client, and a FakeHost with the project's model (shared by the round state
// tests and the crash matrix).
#pragma once

#include <doctest/doctest.h>

#include <memory>
#include <set>
#include <string>
#include <vector>

#include "coordinator/round.h"
#include "secagg/secure_aggregation.h"
#include "tests/coordinator/fake_host.h"

namespace fedcal::coordinator {

// The project's model's statistics on a few lines: every agent contributes these.
CalibrationStats agent_statistics(const ModelRecord& model, const RoundSettings& settings);

// One agent's side: answers each stage's message with the real secure-aggregation client.
struct FakeAgent {
  int64_t id;
  std::vector<uint64_t> input;
  SecAggClient client;

  void join(Round& round, int64_t round_id) const;
  // Answers the last message of `kind` the host sent it; false if there was none.
  bool answer(testing::FakeHost& host, Round& round, const std::string& kind);
  void deliver(Round& round, OutgoingMessage& message) const;
};

struct RoundFixture {
  testing::ScratchDir dir;
  testing::FakeHost host{dir};
  std::vector<int64_t> ids;
  ModelRecord model;
  RoundSettings settings;
  std::vector<FakeAgent> agents;

  explicit RoundFixture(int count);
  std::unique_ptr<Round> start();
  // Every agent in `which` (all if empty) answers `kind`; returns how many did.
  int answer(Round& round, const std::string& kind, const std::set<int64_t>& which = {});
  // One tick, and more while the unmasking runs on its worker thread (bounded), so a test sees the
  // stage that follows it.
  void tick(Round& round);
  // Ticks until the quantization job has finished (a real job on a worker thread; bounded).
  void wait_for_quantization(Round& round);
  // Every agent joins and answers every stage until the round reaches `target`.
  void advance_to(Round& round, RoundStage target);
  std::string failure(const Round& round) const { return round.status().value("failure", ""); }
};

}  // namespace fedcal::coordinator
