// An in-process host for Round and Rollout: a real SQLite store and real files in a scratch folder,
// a clock the test moves by hand, an online set the test controls, and every message the state
// machine sends kept (decoded) for the test to read and answer. No sockets, no processes: each test
// drives every transition in milliseconds.
#pragma once

#include <cstdint>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "coordinator/round.h"
#include "tests/test_support.h"

namespace fedcal::testing {

struct SentMessage {
  int64_t agent;
  std::string kind;  // body_name: "roundAnnounce", "roundKeys", ...
  std::shared_ptr<DecodedEnvelope> message;
  wire::Envelope::Body::Reader body() const { return message->envelope().getBody(); }
};

class FakeHost : public coordinator::RoundHost {
 public:
  explicit FakeHost(const ScratchDir& dir);

  // Enrolls `count` agents in the store (ids 1..count) and puts them online.
  std::vector<int64_t> enroll(int count);
  // An FP32 package of the project's model, signed with the coordinator's key, in the store.
  coordinator::ModelRecord import_project_model();

  void send(int64_t agent_id, OutgoingMessage& message) override;
  bool is_online(int64_t agent_id) const override { return online.count(agent_id) > 0; }
  std::vector<int64_t> online_agents() const override { return {online.begin(), online.end()}; }
  coordinator::Store& store() override { return *store_; }
  const coordinator::CoordinatorConfig& config() const override { return config_; }
  void log(const std::string& line) override { logs.push_back(line); }
  int64_t monotonic_ms() const override { return now_ms; }

  // The coordinator killed (SIGKILL) and started again: the store reopened from its file, every
  // agent disconnected until the test brings it back, and from now on messages to agents that are
  // not online are lost (as a real coordinator has no route to them).
  void restart();

  // Messages of `kind` sent to `agent` since the last take (removed from `sent`).
  std::vector<SentMessage> take(int64_t agent, const std::string& kind);

  int64_t now_ms = 1000;
  std::set<int64_t> online;
  std::vector<SentMessage> sent;
  std::vector<std::string> logs;
  bool drop_to_offline = false;

 private:
  coordinator::CoordinatorConfig config_;
  std::unique_ptr<coordinator::Store> store_;
  uint64_t sequence_ = 0;
};

// An envelope as the coordinator's decoder hands it to a handler.
DecodedEnvelope decoded(OutgoingMessage& message);

}  // namespace fedcal::testing
