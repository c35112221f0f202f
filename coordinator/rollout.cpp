#include "coordinator/rollout.h"

#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "common/error.h"

namespace fedcal::coordinator {

nlohmann::json RolloutSettings::to_json() const {
  return {{"model_id", model_id},
          {"waves", waves},
          {"group", group},
          {"max_kl", max_kl},
          {"max_slowdown", max_slowdown},
          {"min_healthy", min_healthy},
          {"min_failing", min_failing},
          {"wave_timeout_ms", wave_timeout_ms},
          {"soak_ms", soak_ms}};
}

RolloutSettings RolloutSettings::from_json(const nlohmann::json& json) {
  RolloutSettings settings;
  try {
    for (const auto& [key, value] : json.items()) {
      if (!settings.to_json().contains(key)) fail("unknown rollout setting '{}'", key);
    }
    settings.model_id = json.value("model_id", settings.model_id);
    settings.waves = json.value("waves", settings.waves);
    settings.group = json.value("group", settings.group);
    settings.max_kl = json.value("max_kl", settings.max_kl);
    settings.max_slowdown = json.value("max_slowdown", settings.max_slowdown);
    settings.min_healthy = json.value("min_healthy", settings.min_healthy);
    settings.min_failing = json.value("min_failing", settings.min_failing);
    settings.wave_timeout_ms = json.value("wave_timeout_ms", settings.wave_timeout_ms);
    settings.soak_ms = json.value("soak_ms", settings.soak_ms);
  } catch (const nlohmann::json::exception& error) {
    fail("rollout settings: {}", error.what());
  }
  if (settings.waves.empty() || settings.waves.size() > 20) fail("waves: 1 to 20 cumulative percentages");
  double last = 0;
  for (double wave : settings.waves) {
    if (!(wave > last && wave <= 100)) fail("waves must increase, within (0, 100]: got {}", wave);
    last = wave;
  }
  if (settings.waves.back() != 100) fail("the last wave must be 100%");
  if (!(settings.max_kl >= 0)) fail("max_kl must be >= 0");
  if (!(settings.max_slowdown >= 1)) fail("max_slowdown must be >= 1");
  if (!(settings.min_healthy >= 0 && settings.min_healthy <= 100)) fail("min_healthy must be a percentage");
  if (settings.min_failing < 1 || settings.min_failing > 100000) fail("min_failing must be in [1, 100000]");
  if (settings.wave_timeout_ms < 1000) fail("wave_timeout_ms must be >= 1000");
  if (settings.soak_ms < 0 || settings.soak_ms >= settings.wave_timeout_ms) fail("soak_ms must be in [0, wave_timeout_ms)");
  return settings;
}

nlohmann::json ActivationOutcome::to_json() const {
  return {{"activated", activated},
          {"rolled_back", rolled_back},
          {"active_sha256", active_sha256},
          {"error", error},
          {"mean_kl", mean_kl},
          {"top1_agreement", top1_agreement},
          {"tokens_per_second", tokens_per_second},
          {"previous_tokens_per_second", previous_tokens_per_second},
          {"tokens_per_second_spread", tokens_per_second_spread},
          {"previous_tokens_per_second_spread", previous_tokens_per_second_spread},
          {"reference_checked", reference_checked},
          {"reference_kl", reference_kl},
          {"reference_top1_agreement", reference_top1_agreement},
          {"crashes", crashes}};
}

ActivationOutcome ActivationOutcome::from_json(const nlohmann::json& json) {
  ActivationOutcome outcome;
  if (!json.is_object()) return outcome;
  outcome.activated = json.value("activated", false);
  outcome.rolled_back = json.value("rolled_back", false);
  outcome.active_sha256 = json.value("active_sha256", "");
  outcome.error = json.value("error", "");
  outcome.mean_kl = json.value("mean_kl", 0.0);
  outcome.top1_agreement = json.value("top1_agreement", 0.0);
  outcome.tokens_per_second = json.value("tokens_per_second", 0.0);
  outcome.previous_tokens_per_second = json.value("previous_tokens_per_second", 0.0);
  outcome.tokens_per_second_spread = json.value("tokens_per_second_spread", 0.0);
  outcome.previous_tokens_per_second_spread = json.value("previous_tokens_per_second_spread", 0.0);
  outcome.reference_checked = json.value("reference_checked", false);
  outcome.reference_kl = json.value("reference_kl", 0.0);
  outcome.reference_top1_agreement = json.value("reference_top1_agreement", 0.0);
  outcome.crashes = json.value("crashes", 0u);
  return outcome;
}

ActivationOutcome ActivationOutcome::from_wire(wire::ActivationReport::Reader report) {
  ActivationOutcome outcome;
  outcome.activated = report.getActivated();
  outcome.rolled_back = report.getRolledBack();
  outcome.active_sha256 = read_text(report.getSha256(), 128);
  outcome.error = read_text(report.getError(), 1000);
  outcome.mean_kl = read_figure(report.getMeanKl(), kMaxReportedNats, "activationReport.meanKl");
  outcome.top1_agreement = read_figure(report.getTop1Agreement(), 1, "activationReport.top1Agreement");
  outcome.tokens_per_second =
      read_figure(report.getTokensPerSecond(), kMaxReportedTokensPerSecond, "activationReport.tokensPerSecond");
  outcome.previous_tokens_per_second =
      read_figure(report.getPreviousTokensPerSecond(), kMaxReportedTokensPerSecond, "activationReport.previousTokensPerSecond");
  outcome.tokens_per_second_spread =
      read_figure(report.getTokensPerSecondSpread(), kMaxReportedSpread, "activationReport.tokensPerSecondSpread");
  outcome.previous_tokens_per_second_spread = read_figure(report.getPreviousTokensPerSecondSpread(), kMaxReportedSpread,
                                                          "activationReport.previousTokensPerSecondSpread");
  outcome.reference_checked = report.getReferenceChecked();
  outcome.reference_kl = read_figure(report.getReferenceKl(), kMaxReportedNats, "activationReport.referenceKl");
  outcome.reference_top1_agreement = read_figure(report.getReferenceTop1Agreement(), 1, "activationReport.referenceTop1Agreement");
  outcome.crashes = report.getCrashes();
  return outcome;
}

Rollout::Rollout(RoundHost& host, int64_t id, RolloutSettings settings, ModelRecord model)
    : host_(host), id_(id), settings_(std::move(settings)), model_(std::move(model)) {
  // The FP32 package a round's INT8 result was quantized from: agents check against it.
  if (model_.kind != "fp32" && model_.round_id) {
    const auto round = host_.store().round(*model_.round_id);
    const auto source = round ? host_.store().model(round->model_id) : std::nullopt;
    if (source && source->kind == "fp32") reference_ = *source;
    // The round's package for devices without an INT8 dot product, beside its fleet package.
    std::optional<int64_t> fleet, static_class;
    for (const auto& [label, model_id] : round ? recorded_results(*round) : std::vector<std::pair<std::string, int64_t>>()) {
      if (label == "fleet" && !fleet) fleet = model_id;
      if (label == kStaticClassLabel && !static_class) static_class = model_id;
    }
    if (fleet == model_.id && static_class) static_package_ = host_.store().model(*static_class);
  }
}

const ModelRecord& Rollout::package_for(const AgentState& state) const {
  return state.static_class && static_package_ ? *static_package_ : model_;
}

std::unique_ptr<Rollout> Rollout::start(RoundHost& host, const RolloutSettings& settings, const ModelRecord& model,
                                        std::vector<int64_t> targets) {
  if (targets.empty()) fail("no agents{} to roll out to", settings.group.empty() ? "" : " with label '" + settings.group + "'");
  if (!std::filesystem::exists(model.path)) fail("model {}: its file {} is missing from the artifact store", model.id, model.path);
  const int64_t id = host.store().create_rollout(model.id, settings.to_json().dump());
  std::unique_ptr<Rollout> rollout(new Rollout(host, id, settings, model));
  if (rollout->static_package_ && !std::filesystem::exists(rollout->static_package_->path))
    fail("model {}: the static package for devices without an INT8 dot product (model {}) is missing from the artifact store",
         model.id, rollout->static_package_->id);
  const size_t n = targets.size();
  size_t index = 0;
  for (size_t wave = 0; wave < settings.waves.size(); ++wave) {
    const auto end = static_cast<size_t>(std::ceil(settings.waves[wave] / 100 * static_cast<double>(n)));
    for (; index < std::min(end, n); ++index) rollout->agents_[targets[index]].wave = static_cast<int>(wave);
  }
  if (rollout->static_package_) {
    for (auto& [agent, state] : rollout->agents_) {
      const auto record = host.store().agent(agent);
      state.static_class = record && !has_int8_dot_product(*record);
    }
  }
  host.store().audit("operator", "rollout started",
                     fmt::format("rollout {} of model {}: {}", id, model.id, settings.to_json().dump()));
  rollout->start_wave(0);
  return rollout;
}

std::unique_ptr<Rollout> Rollout::load(RoundHost& host, const Store::RolloutRecord& record) {
  const auto model = host.store().model(record.model_id);
  if (!model) fail("rollout {}: model {} is missing", record.id, record.model_id);
  std::unique_ptr<Rollout> rollout(
      new Rollout(host, record.id, RolloutSettings::from_json(nlohmann::json::parse(record.settings_json)), *model));
  const nlohmann::json state = nlohmann::json::parse(record.state_json);
  rollout->stage_ = record.stage;
  rollout->reason_ = record.reason;
  rollout->wave_ = state.value("wave", 0);
  const auto restore = [&](int64_t agent, int wave, const std::string& status, const std::string& package,
                           const nlohmann::json& report) -> AgentState& {
    AgentState& entry = rollout->agents_[agent];
    entry.wave = wave;
    entry.status = parse_target_status(status);
    entry.static_class = package == kStaticClassLabel;
    if (report.is_object()) entry.report = ActivationOutcome::from_json(report);
    return entry;
  };
  for (const Store::RolloutTarget& target : host.store().rollout_targets(record.id)) {
    const nlohmann::json report = target.report_json.empty() ? nlohmann::json() : nlohmann::json::parse(target.report_json);
    restore(target.agent_id, target.wave, target.status, target.package, report).dirty = false;
  }
  // A rollout saved by an older version: its targets in the snapshot (rows from the next save on).
  for (const auto& agent : state.value("agents", nlohmann::json::array()))
    restore(agent["agent"].get<int64_t>(), agent["wave"].get<int>(), agent["status"].get<std::string>(),
            agent.value("package", std::string()), agent.value("report", nlohmann::json()));
  return rollout;
}

nlohmann::json Rollout::stored_status(RoundHost& host, const Store::RolloutRecord& record) {
  return load(host, record)->status();
}

std::unique_ptr<Rollout> Rollout::recover(RoundHost& host, const Store::RolloutRecord& record) {
  std::unique_ptr<Rollout> rollout = load(host, record);
  // Deadlines are monotonic and not stored: after a restart the wave gets its whole timeout again,
  // reports count from now (the soak is watched in full again: no gate is judged on a soak that
  // was cut short), and agents get agent_timeout_ms to reconnect before the gate stops waiting.
  const int64_t now = host.monotonic_ms();
  rollout->wave_deadline_ms_ = now + rollout->settings_.wave_timeout_ms;
  rollout->reconnect_grace_until_ms_ = now + host.config().agent_timeout_ms;
  for (auto& [agent, entry] : rollout->agents_) entry.reported_at_ms = now;
  host.log(fmt::format("rollout {}: recovered in stage {}, wave {}", record.id, name(record.stage), rollout->wave_ + 1));
  return rollout;
}

void Rollout::start_wave(int wave) {
  wave_ = wave;
  wave_deadline_ms_ = host_.monotonic_ms() + settings_.wave_timeout_ms;
  host_.log(fmt::format("rollout {}: wave {} of {}", id_, wave + 1, settings_.waves.size()));
  for (auto& [agent, state] : agents_) {
    if (state.wave == wave && state.status == TargetStatus::kPending && host_.is_online(agent)) send_activate(agent);
  }
  save();
}

void Rollout::send_activate(int64_t agent_id) {
  OutgoingMessage message;
  auto activate = message.body().initModelActivate();
  activate.setRolloutId(static_cast<uint64_t>(id_));
  const ModelRecord& package = package_for(agents_[agent_id]);
  activate.setSha256(package.sha256);
  activate.setBytes(static_cast<uint64_t>(package.bytes));
  if (reference_) {
    activate.setReferenceSha256(reference_->sha256);
    activate.setReferenceBytes(static_cast<uint64_t>(reference_->bytes));
  }
  host_.send(agent_id, message);
  agents_[agent_id].status = TargetStatus::kSent;
  agents_[agent_id].dirty = true;
}

void Rollout::send_rollback(int64_t agent_id) {
  OutgoingMessage message;
  auto order = message.body().initModelRollback();
  order.setRolloutId(static_cast<uint64_t>(id_));
  order.setSha256(package_for(agents_[agent_id]).sha256);
  host_.send(agent_id, message);
  agents_[agent_id].status = TargetStatus::kRollingBack;
  agents_[agent_id].dirty = true;
}

std::string Rollout::unhealthy_reason(const ActivationOutcome& report) const {
  if (!report.activated) return report.error.empty() ? "not activated" : "not activated: " + report.error;
  if (report.crashes > 0) return fmt::format("{} crash(es)", report.crashes);
  // Against the FP32 original where the agent checked it (a first rollout has no previous model, and a
  // repair's previous model is the broken one); else against the previous model.
  if (report.reference_checked) {
    if (report.reference_kl > settings_.max_kl) return fmt::format("KL vs FP32 {:.4g} > {}", report.reference_kl, settings_.max_kl);
  } else if (report.mean_kl > settings_.max_kl) {
    return fmt::format("KL {:.4g} > {}", report.mean_kl, settings_.max_kl);
  }
  const double now = report.tokens_per_second, before = report.previous_tokens_per_second;
  if (before > 0 && now <= 0) return "no speed measured";
  if (before > 0 && before / now > settings_.max_slowdown)
    return fmt::format("{:.2f}x slower > {}x", before / now, settings_.max_slowdown);
  return "";
}

void Rollout::agent_online(int64_t agent_id, const std::string& active_sha, unsigned crashes) {
  const auto it = agents_.find(agent_id);
  if (it == agents_.end()) return;
  AgentState& state = it->second;
  const std::string& package_sha = package_for(state).sha256;
  if (crashes > 0 && active_sha == package_sha &&
      (state.status == TargetStatus::kHealthy || state.status == TargetStatus::kSent)) {
    if (!state.report) state.report = ActivationOutcome{};
    state.report->crashes = crashes;
    state.status = TargetStatus::kUnhealthy;
    state.dirty = true;
    host_.log(fmt::format("rollout {}: agent {} crashed {} time(s) since activating the model", id_, agent_id, crashes));
  }
  const bool updated = state.status != TargetStatus::kPending && state.status != TargetStatus::kRolledBack;
  if ((stage_ == RolloutStage::kRolledBack || stage_ == RolloutStage::kHalted) && updated && active_sha == package_sha) {
    send_rollback(agent_id);  // it was offline when the rollout was rolled back
  } else if ((stage_ == RolloutStage::kRunning || stage_ == RolloutStage::kDone) && state.wave <= wave_ &&
             (state.status == TargetStatus::kPending || state.status == TargetStatus::kSent)) {
    // Offline during its wave (or not yet back after a coordinator restart): it catches up now. One
    // that has the package active already answers at once, with its crash count: the gate needs its report.
    send_activate(agent_id);
  }
  save();
}

void Rollout::handle(int64_t agent_id, wire::ActivationReport::Reader report) {
  if (report.getRolloutId() != static_cast<uint64_t>(id_))
    fail("activationReport for rollout {}, not the current one ({})", report.getRolloutId(), id_);
  const auto it = agents_.find(agent_id);
  if (it == agents_.end()) fail("agent {} is not a target of rollout {}", agent_id, id_);
  const ActivationOutcome outcome = ActivationOutcome::from_wire(report);
  AgentState& state = it->second;
  state.reported_at_ms = host_.monotonic_ms();
  state.dirty = true;
  if (outcome.rolled_back && state.report && state.report->activated) {
    // The figures its gate judged stay on record; the report says it is back on its previous model.
    state.report->rolled_back = true;
    state.report->active_sha256 = outcome.active_sha256;
  } else {
    state.report = outcome;
  }
  host_.store().set_active_model(agent_id, outcome.active_sha256);
  if (outcome.rolled_back) {
    state.status = TargetStatus::kRolledBack;
  } else if (stage_ == RolloutStage::kRolledBack || stage_ == RolloutStage::kHalted) {
    if (outcome.activated) send_rollback(agent_id);  // activated after the halt: undo
  } else if (!outcome.activated) {
    state.status = TargetStatus::kFailed;
  } else {
    state.status = unhealthy_reason(outcome).empty() ? TargetStatus::kHealthy : TargetStatus::kUnhealthy;
  }
  save();
}

void Rollout::postpone(int64_t ms) {
  wave_deadline_ms_ += ms;
  reconnect_grace_until_ms_ = std::max(reconnect_grace_until_ms_ + ms, stall_grace_until(host_, ms));
}

void Rollout::tick() {
  if (stage_ != RolloutStage::kRunning) return;
  // The gate of the current wave: every online agent of waves <= current has reported, or the deadline passed.
  int reported = 0, healthy_count = 0, waiting = 0;
  int64_t last_report_ms = 0;
  for (const auto& [agent, state] : agents_) {
    if (state.wave > wave_) continue;
    if (state.status == TargetStatus::kHealthy || state.status == TargetStatus::kUnhealthy ||
        state.status == TargetStatus::kFailed) {
      ++reported;
      last_report_ms = std::max(last_report_ms, state.reported_at_ms);
      healthy_count += state.status == TargetStatus::kHealthy ? 1 : 0;
    } else if (host_.is_online(agent) || host_.monotonic_ms() < reconnect_grace_until_ms_) {
      ++waiting;
    }
  }
  const int64_t now = host_.monotonic_ms();
  const bool expired = now >= wave_deadline_ms_;
  if (waiting > 0 && !expired) return;
  // Soak: the updated agents run a while before the gate is judged, so crashes count.
  if (reported > 0 && now - last_report_ms < settings_.soak_ms && !expired) {
    host_.fault_point("kill-soaking");
    return;
  }
  if (reported == 0) {
    if (expired) rollback(fmt::format("no agent of wave {} reported within {} ms", wave_ + 1, settings_.wave_timeout_ms));
    return;
  }
  // The agents whose reports fail the gate, named; fewer than min_failing of them (or all targets,
  // if fewer) never fail it, so one agent's report cannot veto a rollout for the whole fleet.
  // A healthy report from an agent that is offline when the gate is judged does not count: it hung
  // or died during the soak.
  std::vector<std::string> failing;
  const bool grace = now < reconnect_grace_until_ms_;
  for (const auto& [agent, state] : agents_) {
    if (state.wave > wave_) continue;
    if (state.status == TargetStatus::kHealthy && !grace && !host_.is_online(agent)) {
      --healthy_count;
      failing.push_back(fmt::format("agent {} (offline at the end of its soak)", agent));
    } else if (state.status == TargetStatus::kUnhealthy || state.status == TargetStatus::kFailed) {
      failing.push_back(fmt::format("agent {} ({})", agent, state.report ? unhealthy_reason(*state.report) : "no report"));
    }
  }
  const auto named = [&failing] {
    const size_t shown = std::min<size_t>(failing.size(), 10);
    return fmt::format("{}{}", fmt::join(failing.begin(), failing.begin() + static_cast<std::ptrdiff_t>(shown), ", "),
                       failing.size() > shown ? fmt::format(" and {} more", failing.size() - shown) : "");
  };
  const int needed = std::min<int>(settings_.min_failing, static_cast<int>(agents_.size()));
  const double healthy_percent = 100.0 * healthy_count / reported;
  if (healthy_percent < settings_.min_healthy && static_cast<int>(failing.size()) >= needed) {
    rollback(
        fmt::format("wave {} failed its health gate: {} of {} reporting agents healthy ({:.0f}% < {:.0f}%; max KL {}, max "
                    "slowdown {}); failing: {}",
                    wave_ + 1, healthy_count, reported, healthy_percent, settings_.min_healthy, settings_.max_kl,
                    settings_.max_slowdown, named()));
    return;
  }
  if (!failing.empty()) {
    host_.log(fmt::format("rollout {}: wave {} passes its gate with {} failing agent(s) (fewer than min_failing {}): {}", id_,
                          wave_ + 1, failing.size(), needed, named()));
  }
  if (wave_ + 1 < static_cast<int>(settings_.waves.size())) {
    start_wave(wave_ + 1);
  } else {
    stage_ = RolloutStage::kDone;
    // The fleet contradicted every report that failed: counted against the agent that sent it.
    for (const auto& [agent, state] : agents_) {
      if (state.status == TargetStatus::kUnhealthy && state.report && state.report->crashes == 0)
        host_.store().note_contradiction(agent, fmt::format("rollout {}: {}", id_, unhealthy_reason(*state.report)));
    }
    host_.store().audit("coordinator", "rollout done",
                        failing.empty() ? fmt::format("rollout {}", id_) : fmt::format("rollout {}; failing: {}", id_, named()));
    save();
  }
}

void Rollout::pause() {
  if (stage_ != RolloutStage::kRunning) fail("rollout {} is {}, not running", id_, name(stage_));
  stage_ = RolloutStage::kPaused;
  save();
}

void Rollout::resume() {
  if (stage_ != RolloutStage::kPaused) fail("rollout {} is {}, not paused", id_, name(stage_));
  stage_ = RolloutStage::kRunning;
  start_wave(wave_);
}

void Rollout::abort() {
  if (finished()) fail("rollout {} is already {}", id_, name(stage_));
  stage_ = RolloutStage::kAborted;
  reason_ = "aborted by the operator (updated agents keep the new model; `rollout rollback` reverts them)";
  save(reason_);
}

void Rollout::rollback(const std::string& reason) {
  if (stage_ == RolloutStage::kRolledBack) fail("rollout {} is already rolled back", id_);
  stage_ = RolloutStage::kRolledBack;
  reason_ = reason;
  host_.log(fmt::format("rollout {}: rolling back: {}", id_, reason));
  host_.store().audit("coordinator", "rollout rolled back", fmt::format("rollout {}: {}", id_, reason));
  for (auto& [agent, state] : agents_) {
    if (state.status == TargetStatus::kHealthy || state.status == TargetStatus::kUnhealthy ||
        state.status == TargetStatus::kSent) {
      if (host_.is_online(agent)) send_rollback(agent);
    }
  }
  save(reason);
}

void Rollout::save(const std::string& reason) {
  if (!reason.empty()) reason_ = reason;
  std::vector<Store::RolloutTarget> changed;
  for (auto& [agent, state] : agents_) {
    if (!state.dirty) continue;
    changed.push_back(
        {agent, state.wave, std::string(name(state.status)), state.static_class && static_package_ ? kStaticClassLabel : "fleet",
         state.report ? state.report->to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace) : ""});
  }
  const std::string state_json = nlohmann::json{{"wave", wave_}}.dump();
  const std::string row = state_json + std::string(name(stage_)) + reason_;
  if (changed.empty() && row == saved_row_) return;
  host_.store().save_rollout(id_, stage_, reason_, state_json, changed);
  saved_row_ = row;
  for (auto& [agent, state] : agents_) state.dirty = false;
}

bool Rollout::assigned(int64_t agent_id, const std::string& sha256) const {
  const auto it = agents_.find(agent_id);
  return it != agents_.end() && (sha256 == package_for(it->second).sha256 || (reference_ && sha256 == reference_->sha256));
}

nlohmann::json Rollout::status() const {
  nlohmann::json agents = nlohmann::json::array();
  std::map<std::string, int> counts;
  for (const auto& [agent, state] : agents_) {
    agents.push_back({{"agent", agent},
                      {"wave", state.wave},
                      {"status", name(state.status)},
                      {"package", state.static_class && static_package_ ? kStaticClassLabel : "fleet"},
                      {"report", state.report ? state.report->to_json() : nlohmann::json(nullptr)}});
    counts[std::string(name(state.status))] += 1;
  }
  return {{"rollout", id_},
          {"model", model_.id},
          {"sha256", model_.sha256},
          {"reference_model", reference_ ? nlohmann::json(reference_->id) : nlohmann::json(nullptr)},
          {"static_model", static_package_ ? nlohmann::json(static_package_->id) : nlohmann::json(nullptr)},
          {"stage", name(stage_)},
          {"reason", reason_},
          {"wave", wave_},
          {"waves", settings_.waves},
          {"settings", settings_.to_json()},
          {"counts", counts},
          {"agents", agents}};
}

}  // namespace fedcal::coordinator
