// The agent's part in a rollout: download the package, verify and self-test it (worker thread),
// switch slots, report; roll back on order.
#include <chrono>
#include <filesystem>
#include <future>
#include <mutex>
#include <thread>

#include "common/error.h"
#include "edge_agent/agent.h"
#include "edge_agent/private_text.h"

namespace fedcal::edge_agent {

void Agent::on_activate(wire::ModelActivate::Reader activate) {
  const std::string sha = activate.getSha256().cStr();
  if (activation_ && activation_->download && activation_->download->sha256() == sha) {
    // Already on it, maybe for an earlier rollout of the same package: the report goes to this one.
    activation_->rollout = activate.getRolloutId();
    return;
  }
  if (sha == slots_.active()) {
    LocalCheck unchanged;
    send_activation_report(activate.getRolloutId(), true, false, "", &unchanged);
    return;
  }
  if (activation_ && activation_->check.valid()) activation_->check.wait();
  activation_ = std::make_unique<Activation>();
  activation_->rollout = activate.getRolloutId();
  activation_->download = std::make_unique<Download>(sha, activate.getBytes(), config_.downloads_dir(), config_.models_dir());
  try {
    make_room_for(*activation_->download);
  } catch (const Error& error) {
    // Said in the report at once: nothing switches, the gate counts it as failed.
    log(fmt::format("rollout {}: {}", activation_->rollout, error.what()));
    send_activation_report(activation_->rollout, false, false, error.what(), nullptr);
    activation_.reset();
    return;
  }
  if (activation_->download->have() > 0 && !activation_->download->complete()) {
    log(fmt::format("rollout {}: resuming the download of {} at {} of {} bytes", activation_->rollout, sha.substr(0, 16),
                    activation_->download->have(), activation_->download->total()));
  } else {
    log(fmt::format("rollout {}: activating {}", activation_->rollout, sha.substr(0, 16)));
  }
}

void Agent::advance_activation() {
  if (!activation_) return;
  Activation& activation = *activation_;
  if (!activation.check.valid()) {
    if (!activation.download->complete()) {
      request_chunk(*activation.download, activation.chunk_retry);
      return;
    }
    // Verify the signature and self-test before switching: against the active model on our
    // held-out text if there is one, else load and decode.
    const std::string candidate = activation.download->path();
    const std::string previous = slots_.active().empty() ? "" : slots_.path(slots_.active());
    const LocalCheckOptions options = local_check_options(config_);
    activation.check = std::async(std::launch::async, [this, candidate, previous, options] {
      if (previous.empty()) return self_test(candidate, coordinator_signing_key_, options);
      const PrivateText text = read_private_text(config_.data_dir, config_.heldout_fraction);
      return check_package("rollout", previous, candidate, coordinator_signing_key_,
                           text.heldout.empty() ? text.calibration : text.heldout, options, false);
    });
    return;
  }
  if (activation.check.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  const LocalCheck check = activation.check.get();  // throws: reported as a failed activation by run()
  slots_.activate(activation.download->sha256());
  {
    std::lock_guard lock(active_path_mutex_);
    active_path_ = slots_.path(slots_.active());
  }
  log(fmt::format("rollout {}: {} active (KL vs previous {:.5f}, {:.1f} tokens/s)", activation.rollout,
                  slots_.active().substr(0, 16), check.mean_kl, check.decode_tokens_per_second));
  send_activation_report(activation.rollout, true, false, "", &check);
  activation_.reset();
  inject_fault("exit-after-activation");
}

void Agent::on_rollback(wire::ModelRollback::Reader rollback) {
  if (activation_) {
    if (activation_->check.valid()) activation_->check.wait();
    activation_.reset();
  }
  // A switch back while running: nothing crashed, so the crash count starts again at 0 (the running
  // marker of this process stays; it is not a start).
  const bool switched = slots_.rollback();
  {
    std::lock_guard lock(active_path_mutex_);
    active_path_ = slots_.active().empty() ? "" : slots_.path(slots_.active());
  }
  log(fmt::format("rollout {}: rolled back{}", rollback.getRolloutId(),
                  switched ? "" : " (no previous model: nothing to switch)"));
  send_activation_report(rollback.getRolloutId(), false, true, "", nullptr);
}

void Agent::send_activation_report(uint64_t rollout, bool activated, bool rolled_back, const std::string& error,
                                   const LocalCheck* check) {
  OutgoingMessage message;
  auto report = message.body().initActivationReport();
  report.setRolloutId(rollout);
  report.setSha256(slots_.active());
  report.setActivated(activated);
  report.setRolledBack(rolled_back);
  report.setError(error.substr(0, 1000));
  report.setCrashes(slots_.crashes_since_activation());
  if (check) {
    report.setMeanKl(check->mean_kl);
    report.setTop1Agreement(check->top1_agreement);
    report.setTokensPerSecond(check->decode_tokens_per_second);
    report.setPreviousTokensPerSecond(check->reference_decode_tokens_per_second);
    report.setTokensPerSecondSpread(check->decode_spread);
    report.setPreviousTokensPerSecondSpread(check->reference_decode_spread);
  }
  send(message);
}

}  // namespace fedcal::edge_agent
