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
  activation_->download = open_download(sha, activate.getBytes());
  const std::string reference = read_text(activate.getReferenceSha256(), 128);
  try {
    if (!reference.empty() && reference != sha) {
      activation_->reference = open_download(reference, activate.getReferenceBytes());
      make_room_for(*activation_->reference);
    }
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
    for (Download* download : {activation.reference.get(), activation.download.get()}) {
      if (download != nullptr && !download->complete()) {
        request_chunk(*download, activation.chunk_retry);
        return;
      }
    }
    // Verify the signature and self-test before switching: against the active model on our
    // held-out text if there is one, else load and decode; and against the FP32 original it was
    // quantized from, if the coordinator named it (the gate judges that KL then).
    const std::string candidate = activation.download->path();
    const std::string previous = slots_.active().empty() ? "" : slots_.path(slots_.active());
    const std::string reference = activation.reference ? activation.reference->path() : "";
    const LocalCheckOptions options = local_check_options(config_);
    activation.check = std::async(std::launch::async, [this, candidate, previous, reference, options] {
      ActivationCheck result;
      std::string heldout;
      if (!previous.empty() || !reference.empty()) {
        PrivateText text = read_private_text(config_.data_dir, config_.heldout_fraction);
        heldout = std::move(text.heldout.empty() ? text.calibration : text.heldout);
      }
      result.check = previous.empty()
                         ? self_test(candidate, coordinator_signing_key_, options)
                         : check_package("rollout", previous, candidate, coordinator_signing_key_, heldout, options, false);
      if (!reference.empty()) {
        LocalCheckOptions accuracy_only = options;
        accuracy_only.decode_runs = 0;
        result.against_fp32 = check_package("fp32", reference, candidate, coordinator_signing_key_, heldout, accuracy_only, false);
      }
      return result;
    });
    return;
  }
  if (activation.check.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  const ActivationCheck checked = activation.check.get();  // throws: reported as a failed activation by run()
  const LocalCheck& check = checked.check;
  slots_.activate(activation.download->sha256());
  {
    std::lock_guard lock(active_path_mutex_);
    active_path_ = slots_.path(slots_.active());
  }
  log(fmt::format("rollout {}: {} active (KL vs previous {:.5f}{}, {:.1f} tokens/s)", activation.rollout,
                  slots_.active().substr(0, 16), check.mean_kl,
                  checked.against_fp32 ? fmt::format(", vs its FP32 original {:.5f}", checked.against_fp32->mean_kl) : "",
                  check.decode_tokens_per_second));
  send_activation_report(activation.rollout, true, false, "", &check, checked.against_fp32 ? &*checked.against_fp32 : nullptr);
  activation_.reset();
  inject_fault("exit-after-activation");
}

void Agent::on_rollback(wire::ModelRollback::Reader rollback) {
  // Only a switch to the rollout's package is undone: an agent still downloading or self-testing it
  // stops, one that never switched stays where it is (it used to swap its slots anyway and end on
  // the model before its current one). An empty sha256 (an older coordinator) undoes regardless.
  const std::string sha = read_text(rollback.getSha256(), 128);
  if (activation_ && (sha.empty() || !activation_->download || activation_->download->sha256() == sha)) {
    if (activation_->check.valid()) activation_->check.wait();
    activation_.reset();
  }
  std::string outcome;
  if (sha.empty() || slots_.active() == sha) {
    // A switch back while running: nothing crashed, so the crash count starts again at 0 (the
    // running marker of this process stays; it is not a start).
    outcome = slots_.rollback() ? "" : " (no previous model: nothing to switch)";
  } else {
    outcome = fmt::format(" (never switched to {}: {} stays active)", sha.substr(0, 16),
                          slots_.active().empty() ? "no model" : slots_.active().substr(0, 16));
  }
  {
    std::lock_guard lock(active_path_mutex_);
    active_path_ = slots_.active().empty() ? "" : slots_.path(slots_.active());
  }
  log(fmt::format("rollout {}: rolled back{}", rollback.getRolloutId(), outcome));
  send_activation_report(rollback.getRolloutId(), false, true, "", nullptr);
}

void Agent::send_activation_report(uint64_t rollout, bool activated, bool rolled_back, const std::string& error,
                                   const LocalCheck* check, const LocalCheck* against_fp32) {
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
  if (against_fp32) {
    report.setReferenceChecked(true);
    report.setReferenceKl(against_fp32->mean_kl);
    report.setReferenceTop1Agreement(against_fp32->top1_agreement);
  }
  send(message);
}

}  // namespace fedcal::edge_agent
