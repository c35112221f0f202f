// In-process fixture for the rollout state machine: a FakeHost with enrolled agents and a package
// record, and agents' activation reports (shared by the rollout state tests and the crash matrix).
#pragma once

#include <optional>

#include <memory>
#include <string>
#include <vector>

#include "coordinator/rollout.h"
#include "tests/coordinator/fake_host.h"

namespace fedcal::coordinator {

inline constexpr const char* kRolloutSha = "5e11ab1e000000000000000000000000000000000000000000000000000000aa";

struct RolloutFixture {
  testing::ScratchDir dir;
  testing::FakeHost host{dir};
  std::vector<int64_t> ids;
  ModelRecord model;
  RolloutSettings settings;

  explicit RolloutFixture(int count);
  std::unique_ptr<Rollout> start() { return Rollout::start(host, settings, model, ids); }
  // The agents that were sent `kind` since the last look.
  std::vector<int64_t> told(const std::string& kind);
  // `fp32_kl`: the agent also checked the package against its FP32 original.
  void report(Rollout& rollout, int64_t agent, bool activated, double kl = 0.001, double speed = 100, double before = 100,
              std::optional<double> fp32_kl = std::nullopt);
  // An agent's answer to a rollback order.
  void report_rolled_back(Rollout& rollout, int64_t agent);
  std::string status_of(const Rollout& rollout, int64_t agent) const;
};

}  // namespace fedcal::coordinator
