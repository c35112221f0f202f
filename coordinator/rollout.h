// A staged rollout of a signed model package to (a group of) the fleet, persisted as a JSON snapshot.
// Targets are split into waves by cumulative percentage (e.g. 5%, 50%, 100%). Each updated agent
// downloads, verifies, self-tests and switches, then reports its local check: KL and top-1 against
// its previous model on its held-out text, and decoding speed of both; for a round's INT8 result also
// KL and top-1 against the FP32 package it was quantized from, which the gate then judges instead of
// the KL against the previous model (a first rollout is gated; a repair over a broken model passes). A wave's gate holds when the
// healthy fraction of its reporting agents reaches min_healthy (healthy: activated, KL <= max_kl,
// slowdown <= max_slowdown), or fewer than min_failing of them fail (one agent's report cannot veto
// the fleet's rollout; an agent whose failing reports the fleet contradicts is counted, and shows in
// `agents list --failing` from the second time); then the next wave starts. A failing gate halts the rollout and orders
// every agent updated so far back to its previous slot. Agents offline during their wave catch up
// when they return (or are rolled back, if the rollout was). Devices without an INT8 dot product get
// the round's static package where it built one (round_settings.h, device_classes).
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "coordinator/round.h"
#include "coordinator/store.h"

namespace fedcal::coordinator {

struct RolloutSettings {
  int64_t model_id = 0;
  std::vector<double> waves = {5, 50, 100};  // cumulative percentages of the targets
  std::string group;                         // only agents with this label ("" = all)
  double max_kl = 0.05;                      // nats per token, vs the agent's previous model
  double max_slowdown = 1.5;                 // previous tokens/s over new tokens/s
  double min_healthy = 90;                   // percent of a wave's reporting agents
  int min_failing = 2;                       // and at least this many failing (or every target, if fewer)
  int wave_timeout_ms = 600000;              // a wave waits at most this long for reports
  int soak_ms = 30000;                       // and watches its agents this long after the last report (crashes)

  nlohmann::json to_json() const;
  static RolloutSettings from_json(const nlohmann::json& json);  // validates; errors name the field
};

// What an agent reported about activating the rollout's model (its activationReport), or, with only
// `crashes` set, the unclean exits its hello counted since it activated the model.
struct ActivationOutcome {
  bool activated = false;
  bool rolled_back = false;
  std::string active_sha256;
  std::string error;
  double mean_kl = 0;         // vs its previous model, on its held-out text
  double top1_agreement = 0;  // vs its previous model
  double tokens_per_second = 0;           // median of the agent's timed runs
  double previous_tokens_per_second = 0;  // median of the agent's timed runs
  double tokens_per_second_spread = 0;    // (fastest - slowest) / median of those runs
  double previous_tokens_per_second_spread = 0;
  bool reference_checked = false;  // against the FP32 package the new one was quantized from
  double reference_kl = 0;
  double reference_top1_agreement = 0;
  unsigned crashes = 0;

  nlohmann::json to_json() const;
  static ActivationOutcome from_json(const nlohmann::json& json);
  // Reads an activationReport; throws Error on a non-finite or negative figure.
  static ActivationOutcome from_wire(wire::ActivationReport::Reader report);
};

class Rollout {
 public:
  // `targets`: the agents in the group, in id order.
  static std::unique_ptr<Rollout> start(RoundHost& host, const RolloutSettings& settings, const ModelRecord& model,
                                        std::vector<int64_t> targets);
  static std::unique_ptr<Rollout> recover(RoundHost& host, const Store::RolloutRecord& record);
  // A stored rollout as status() shows it (a finished one, for listings); nothing is sent or saved.
  static nlohmann::json stored_status(RoundHost& host, const Store::RolloutRecord& record);

  int64_t id() const { return id_; }
  int64_t model_id() const { return model_.id; }
  bool uses_model(int64_t id) const { return id == model_.id || (static_package_ && id == static_package_->id); }
  RolloutStage stage() const { return stage_; }
  bool finished() const { return is_final(stage_); }

  // An agent said hello: it gets what it missed; crashes since it activated this rollout's model
  // make it unhealthy.
  void agent_online(int64_t agent_id, const std::string& active_sha, unsigned crashes = 0);
  void handle(int64_t agent_id, wire::ActivationReport::Reader report);
  void tick();
  // The coordinator did not run for `ms` (paused, or its loop blocked): the wave's deadline moves by as much.
  void postpone(int64_t ms);
  void pause();
  void resume();
  void abort();
  void rollback(const std::string& reason);
  nlohmann::json status() const;
  // Whether `agent_id` may download the artifact `sha256` for this rollout: a target's package and
  // the FP32 original it is checked against.
  bool assigned(int64_t agent_id, const std::string& sha256) const;

 private:
  struct AgentState {
    int wave = 0;
    TargetStatus status = TargetStatus::kPending;
    std::optional<ActivationOutcome> report;
    int64_t reported_at_ms = 0;  // monotonic
    bool static_class = false;   // no INT8 dot product: gets static_package_ (where there is one)
    bool dirty = true;           // changed since its row was last saved
  };
  Rollout(RoundHost& host, int64_t id, RolloutSettings settings, ModelRecord model);
  // The rollout as stored: settings, stage, reason, wave and targets.
  static std::unique_ptr<Rollout> load(RoundHost& host, const Store::RolloutRecord& record);
  void start_wave(int wave);
  void send_activate(int64_t agent_id);
  void send_rollback(int64_t agent_id);
  std::string unhealthy_reason(const ActivationOutcome& report) const;  // "" when healthy
  // Saves what changed: the rollout's row (stage, reason, wave) and the rows of targets that changed
  // (a hello or report costs one target's row, not a rewrite of all of them).
  void save(const std::string& reason = "");
  const ModelRecord& package_for(const AgentState& state) const;  // model_, or static_package_ for its class

  RoundHost& host_;
  int64_t id_;
  RolloutSettings settings_;
  ModelRecord model_;
  std::optional<ModelRecord> reference_;  // the FP32 package model_ was quantized from, when a round made it
  // The same round's package for devices without an INT8 dot product (kStaticClassLabel), when
  // model_ is a round's fleet package with fine-grained layers and the round built one.
  std::optional<ModelRecord> static_package_;
  RolloutStage stage_ = RolloutStage::kRunning;
  std::string reason_;
  int wave_ = 0;
  int64_t wave_deadline_ms_ = 0;
  int64_t reconnect_grace_until_ms_ = 0;  // after a restart: agents not back yet are still waited for
  std::map<int64_t, AgentState> agents_;
  std::string saved_row_;  // the rollout row as last saved (stage, reason, state)
};

}  // namespace fedcal::coordinator
