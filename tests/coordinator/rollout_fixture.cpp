#include "tests/coordinator/rollout_fixture.h"

namespace fedcal::coordinator {

RolloutFixture::RolloutFixture(int count) {
  ids = host.enroll(count);
  model.sha256 = kRolloutSha;
  model.kind = "int8";
  model.path = dir.path("m.fcpkg");
  testing::write_text(model.path, std::string(1000, 'p'));  // a rollout needs its package in the store
  model.bytes = 1000;
  model.description = "a package";
  model.id = host.store().add_model(model);
  settings.model_id = model.id;
  settings.waves = {20, 60, 100};
  settings.wave_timeout_ms = 10000;
  settings.soak_ms = 2000;
  settings.min_failing = 1;  // strict: one failing agent fails its wave (the veto test sets 2)
}

std::vector<int64_t> RolloutFixture::told(const std::string& kind) {
  std::vector<int64_t> out;
  for (const int64_t id : ids) {
    if (!host.take(id, kind).empty()) out.push_back(id);
  }
  return out;
}

void RolloutFixture::report(Rollout& rollout, int64_t agent, bool activated, double kl, double speed, double before,
                            std::optional<double> fp32_kl) {
  OutgoingMessage message;
  auto report = message.body().initActivationReport();
  report.setRolloutId(static_cast<uint64_t>(rollout.id()));
  report.setActivated(activated);
  report.setSha256(activated ? kRolloutSha : "");
  report.setMeanKl(kl);
  report.setTop1Agreement(0.99);
  report.setTokensPerSecond(speed);
  report.setPreviousTokensPerSecond(before);
  if (fp32_kl) {
    report.setReferenceChecked(true);
    report.setReferenceKl(*fp32_kl);
    report.setReferenceTop1Agreement(0.98);
  }
  const DecodedEnvelope envelope = testing::decoded(message);
  rollout.handle(agent, envelope.envelope().getBody().getActivationReport());
}

void RolloutFixture::report_rolled_back(Rollout& rollout, int64_t agent) {
  OutgoingMessage message;
  auto report = message.body().initActivationReport();
  report.setRolloutId(static_cast<uint64_t>(rollout.id()));
  report.setRolledBack(true);
  report.setSha256("previous-sha");
  const DecodedEnvelope envelope = testing::decoded(message);
  rollout.handle(agent, envelope.envelope().getBody().getActivationReport());
}

std::string RolloutFixture::status_of(const Rollout& rollout, int64_t agent) const {
  const nlohmann::json status = rollout.status();
  for (const auto& entry : status["agents"]) {
    if (entry["agent"] == agent) return entry["status"];
  }
  return "";
}

}  // namespace fedcal::coordinator
