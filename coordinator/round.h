// One calibration round as a persisted state machine. Stages (stored in rounds.stage):
//   collecting  announced; agents download the model, calibrate on their private text, and join
//               with their secure-aggregation keys (stage 0)
//   sharing     keys sent to each participant's neighbours; encrypted shares come back (stage 1)
//   masking     shares forwarded; masked statistics vectors come back (stage 2)
//   unmasking   survivors listed; unmasking shares come back (stage 3); then the sum is unmasked
//   quantizing  the aggregate is persisted; scales and the signed INT8 package(s) are built
//   evaluating  participants check the package(s) on their held-out text and report
//   done | failed
// A smoothing round (settings.smooth) ends after `quantizing` with a smoothed FP32 model instead of a
// package; the coordinator then starts its follow-up round on that model (follow_up).
// A stage ends when every participant still online has answered, or at its deadline; agents that
// went silent are dropped. Secure-aggregation secrets are never written to disk, so a coordinator
// restarted before `quantizing` fails the round with that reason; from `quantizing` on it resumes.
#pragma once

#include <cstdint>
#include <functional>
#include <future>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <utility>
#include <vector>

#include "common/signing.h"
#include "coordinator/coordinator_config.h"
#include "coordinator/quantization_job.h"
#include "coordinator/round_settings.h"
#include "coordinator/store.h"
#include "models/quant/calibration_stats.h"
#include "protocol/wire.h"
#include "secagg/complaint_checks.h"
#include "secagg/relay_group_frames.h"
#include "secagg/secure_aggregation.h"

namespace fedcal::coordinator {

// What a round needs from the server around it.
// A round's result models as its stored report lists them (label, model id), in order; empty for a
// round recorded before reports held them.
std::vector<std::pair<std::string, int64_t>> recorded_results(const RoundRecord& record);

// Waits for an abandoned job and removes the artifacts it created, logging each (RoundHost::abandon).
void remove_abandoned_job_files(std::future<QuantizationJobResult>& job, const std::function<void(const std::string&)>& log);

class RoundHost {
 public:
  virtual ~RoundHost() = default;
  virtual void send(int64_t agent_id, OutgoingMessage& message) = 0;
  virtual bool is_online(int64_t agent_id) const = 0;
  virtual std::vector<int64_t> online_agents() const = 0;
  virtual Store& store() = 0;
  virtual const CoordinatorConfig& config() const = 0;
  virtual void log(const std::string& line) = 0;
  // Milliseconds on a monotonic clock: every deadline and duration (wall-clock time is for display
  // only, so a clock step neither expires nor extends a stage).
  virtual int64_t monotonic_ms() const = 0;
  // Crash tests: SIGKILLs this process when config().fault_injection names `point`.
  void fault_point(const std::string& point);
  // Secure aggregation per group at relays (round_settings.h relay_group_size): the relay an agent is
  // connected through - its route on the relays' socket, the agent's route and CURVE key there - or
  // nullopt when it is connected directly or not at all (with the relay's own CURVE key, which stays
  // when the relay reconnects and its route changes); a frame to a relay (protocol/relay_frames.h); the
  // coordinator's signature (its package signing key) of what agents check.
  struct RelayedAgent {
    std::string relay, route, key, relay_key;
  };
  virtual std::optional<RelayedAgent> relayed(int64_t /*agent_id*/) const { return std::nullopt; }
  virtual void send_to_relay(const std::string& /*relay*/, std::string_view /*kind*/, const std::string& /*payload*/) {}
  virtual Signature sign(std::span<const std::byte> message) const;
  // A quantization job whose round was aborted: the host lets it finish off the event loop, then
  // removes the artifacts it created (nothing refers to them). This default waits for it.
  virtual void abandon(std::future<QuantizationJobResult> job);
};

// After the coordinator did not run for `gap_ms`: until when an agent not heard since still counts as
// coming back. Agents that noticed the silence retry their hello with backoff (steady waits of ~2 s
// first), so they are waited for as long again as the gap, at least agent_timeout_ms. (Was: only
// agent_timeout_ms, and an agent whose next hello came later was counted gone.)
int64_t stall_grace_until(const RoundHost& host, int64_t gap_ms);

// What one participant reported about one result package (a localReport's check), and its report.
struct PackageCheck {
  std::string label;  // "fleet", "public", "group:LABEL"
  uint64_t tokens = 0;
  double mean_kl = 0, top1_agreement = 0, mean_nll = 0, reference_mean_nll = 0;
  double decode_tokens_per_second = 0, reference_decode_tokens_per_second = 0;  // medians of the agent's runs
  double decode_spread = 0, reference_decode_spread = 0;                          // (fastest - slowest) / median
  nlohmann::json to_json() const;
};
struct LocalReport {
  int64_t agent = 0;
  std::string error;  // the agent could not check (empty: it did)
  std::vector<PackageCheck> checks;
  nlohmann::json to_json() const;
  // Reads a localReport; throws Error on a non-finite or negative figure or top-1 above 1.
  static LocalReport from_wire(int64_t agent, wire::LocalReport::Reader report);
  // Reads what to_json wrote (a report kept in the store across a restart).
  static LocalReport from_json(const nlohmann::json& json);
};

// The standard deviation of the Gaussian-mechanism noise the aggregate of a round needs for its
// (epsilon, delta), from the L2 sensitivity of one sequence (derived from the quantization points).
double dp_total_stddev(const ModelConfig& config, const RoundSettings& settings);

// What a round needs to know of its model before it starts: its shape (which sizes the statistics
// vector and the DP noise) and its fingerprint. Loading a package is heavy: load_round_model runs on a
// worker thread, never on the daemon's event loop.
struct RoundModel {
  ModelConfig config;
  std::string fingerprint;
};
RoundModel load_round_model(const ModelRecord& model);

// The exports of a model (`models list`, a round's report): format, file, size, or why it failed.
nlohmann::json exports_json(const std::vector<ExportRecord>& exports);

class Round {
 public:
  // A new round on `model` (an FP32 package in the artifact store, read by load_round_model):
  // persists the round and announces it to every online agent.
  static std::unique_ptr<Round> start(RoundHost& host, const RoundSettings& settings, const ModelRecord& model,
                                      const RoundModel& loaded);
  // After a restart: resumes a round persisted in `quantizing` or `evaluating` (with the reports
  // received before it), fails any other with the reason. Agents are given agent_timeout_ms to
  // reconnect before a stage stops waiting for them.
  static std::unique_ptr<Round> recover(RoundHost& host, const RoundRecord& record);

  int64_t id() const { return id_; }
  int64_t model_id() const { return model_.id; }
  RoundStage stage() const { return stage_; }
  // The unmasking runs on its worker thread (finish_aggregation); tick() takes its result.
  bool aggregating() const { return aggregation_.valid(); }
  bool finished() const { return is_final(stage_); }

  // An agent came online: it gets the announcement or the result it still needs. `held_round`: the
  // round its hello says it takes part in; a participant whose hello names another (it restarted
  // and lost its secrets) has left this round.
  void agent_online(int64_t agent_id, std::optional<uint64_t> held_round = std::nullopt);
  // A round message from an enrolled agent; throws Error if it is malformed or not expected now.
  void handle(int64_t agent_id, wire::Envelope::Reader envelope);
  // An agent left the round or cannot take part in it (its roundLeave, or a hello that says it is
  // unavailable): no stage waits for it any more; `cause` and `reason` go into the status, the
  // participant's record and the report. A participant that leaves is a dropout.
  void leave(int64_t agent_id, const std::string& cause, const std::string& reason);
  // A relay's result for one of this round's relay groups (secagg/relay_group_frames.h); throws Error
  // for one that is malformed, not expected now or not from the group's relay.
  void relay_group_result(const std::string& relay_key, std::span<const std::byte> payload);
  // Deadlines, dropped agents, the quantization job.
  void tick();
  // The coordinator did not run for `ms` (paused, or its loop blocked): the stage's deadline and the
  // join grace move by as much, so a pause costs time, not the round.
  void postpone(int64_t ms);
  // Fails the round (operator abort or shutdown).
  void fail_round(const std::string& reason);

  // `agents`: with the per-agent list (a database read of every participant).
  nlohmann::json status(bool agents = true) const;
  // Whether `agent_id` may download the artifact `sha256` for this round: its model once announced
  // to the agent, the packages it checks once a participant.
  bool assigned(int64_t agent_id, const std::string& sha256);

  // A smoothing round (settings.smooth) done: the round to start next, on its smoothed FP32 model
  // (what `record` stores as the round's result). None for any other round.
  struct FollowUp {
    RoundSettings settings;
    ModelRecord model;
  };
  static std::optional<FollowUp> follow_up(Store& store, const RoundRecord& record);

 private:
  Round(RoundHost& host, int64_t id, RoundSettings settings, ModelRecord model);
  void enter(RoundStage stage, int64_t timeout_ms);
  void announce(int64_t agent_id);
  void begin_sharing();
  void begin_masking();
  void send_round_keys(uint32_t index);      // roundKeys: participant `index`'s neighbours and their keys
  void send_shares(uint32_t index);          // sharesForYou: what U2 sent participant `index`
  void send_unmask_request(uint32_t index);  // unmaskRequest: the survivors
  // Complaints (maskedInput.badShares) and their checks (secagg/complaint_checks.h): the accused opens
  // the disputed share.
  void complain(uint32_t complainer, const std::vector<uint32_t>& senders);
  void exclude_senders(uint32_t complainer, const std::vector<uint32_t>& senders, const std::string& why);
  void ask_opening(uint32_t accused, uint32_t complainer);      // shareOpenRequest
  void complaint_false(uint32_t complainer, uint32_t accused);  // the complainer left out
  // roundAbort: the round is over for `agent_id`, with the reason.
  void send_round_abort(int64_t agent_id, const std::string& reason);
  // roundAbort to one agent whose message came too late: the round goes on without it, so it drops
  // its part (and stops re-sending).
  void tell_left_behind(int64_t agent_id, const std::string& why);
  void begin_unmasking();
  // Relay groups: the participants split by relay into groups, each sent to its relay; then each
  // group's sum opened (finish_group_aggregation, on a worker thread as finish_aggregation).
  void begin_relay_groups(const SecAggConfig& round_config);
  void finish_group_aggregation();
  nlohmann::json relay_groups_summary() const;
  // The unmasking (rebuilding every secret from its shares, removing the masks: ~0.5-0.75 ms per agent)
  // runs on a worker thread that owns the SecAggServer from then on, so heartbeats and other messages
  // are answered meanwhile; complete_aggregation takes its result on the event loop (tick).
  struct Aggregation {
    std::optional<std::vector<uint64_t>> sum;
    std::string why;  // when there is no sum
    std::set<uint32_t> wrong_revealers, survivors;
    uint32_t lane_bits = 0;
    // Relay groups: each opened group's sum and its agents, in group order (group_scales "median").
    std::vector<std::vector<uint64_t>> group_sums;
    std::vector<size_t> group_agents;
  };
  void finish_aggregation();
  void complete_aggregation(Aggregation aggregation);
  // `groups`: the relay groups' statistics, with group_scales "median".
  void begin_quantizing(CalibrationStats stats, std::vector<CalibrationStats> groups);
  void begin_evaluating(const QuantizationJobResult& result);
  void finish_smoothing(const BuiltSmoothing& smoothed);
  // Stores a package the job built as a model of this round (kind "int8" or "fp32") and lists it in
  // results_ under `label` ("fleet", "public", "group:<label>", "smoothed"); returns its model id.
  int64_t record_result(const BuiltPackage& built, const std::string& kind, const std::string& label);
  std::vector<size_t> results_for(int64_t agent_id);  // indices into results_ the agent checks
  void send_result(int64_t agent_id);
  void finish();
  int index_of(int64_t agent_id) const;
  // Online (or, just after a restart, not yet back) and not left: a stage still waits for it.
  bool expected(int64_t agent_id) const;
  // Participants (by index) in `pool` that have not answered the current stage and are expected.
  bool waiting_for(const std::set<uint32_t>& pool, const std::set<uint32_t>& answered) const;
  nlohmann::json secagg_summary() const;
  nlohmann::json agents_status() const;

  RoundHost& host_;
  int64_t id_;
  RoundSettings settings_;
  ModelRecord model_;
  CalibrationStats template_stats_;       // layout, points and model identity of the vectors
  double dp_noise_stddev_ = 0;            // per agent
  uint64_t count_bound_per_agent_ = 0;    // the most one agent adds to any count (the bit-width budget)
  bool all_support_narrow_lanes_ = true;  // every participant said it can mask in 32-bit lanes
  std::set<uint32_t> neighbour_survivors_;        // participants that unmask from their neighbours' survivors
  bool all_support_ephemeral_share_keys_ = true;  // and seal shares under ephemeral keys (checkable complaints)
  double dp_total_stddev_ = 0;            // of the aggregate, if min_agents join

  RoundStage stage_ = RoundStage::kCollecting;
  bool entered_ = false;  // stage_ has been entered (a recovered round has not)
  int64_t stage_started_ms_ = 0;
  int64_t quorum_at_ms_ = 0;  // monotonic: when min_agents had joined
  int64_t stage_deadline_ms_ = 0;
  std::map<std::string, int64_t> stage_ms_;  // how long each stage took, by stage name

  std::set<int64_t> announced_;
  std::vector<int64_t> participants_;  // by index
  std::map<int64_t, uint32_t> participant_index_;  // agent id -> its index in participants_ (index_of)
  std::vector<AdvertisedKeys> keys_;
  std::unique_ptr<SecAggServer> secagg_;   // null once the unmasking runs (aggregation_), and with relay groups
  bool all_seal_self_mask_shares_ = true;  // every participant can take part in a relay group
  X25519KeyPair key_checker_ = X25519KeyPair::generate();  // checks the joins' keys (check_x25519_public_key)
  struct RelayGroup {
    std::string relay;              // its relay's route
    std::string relay_key;          // and CURVE key: the result is taken from that relay on any connection
    std::vector<uint32_t> members;  // participant indices, by index in the group
    SecAggConfig config;
    std::optional<RelayGroupResult> result;
  };
  std::vector<RelayGroup> relay_groups_;            // group id = position + 1
  std::shared_ptr<const X25519KeyPair> round_key_;  // what relay groups seal self-mask shares to (in memory only)
  std::future<Aggregation> aggregation_;
  std::set<uint32_t> u1_;
  ComplaintChecks complaint_checks_{{
      [this](uint32_t participant) { return secagg_->excluded().count(participant) > 0; },
      [this](uint32_t accused, uint32_t complainer) { ask_opening(accused, complainer); },
      [this](uint32_t complainer, uint32_t accused, const std::string& why) { exclude_senders(complainer, {accused}, why); },
      [this](uint32_t complainer, uint32_t accused) { complaint_false(complainer, accused); },
  }};
  std::set<uint32_t> false_complainers_;                 // left out: their complaint was false
  nlohmann::json complaints_ = nlohmann::json::array();  // each settled complaint, for the report
  nlohmann::json secagg_summary_;  // kept after the secrets are dropped
  std::string aggregate_sha256_;   // of the unmasked statistics (status: statistics_sha256)

  std::future<QuantizationJobResult> job_;
  std::vector<ModelRecord> results_;  // fleet, then baseline
  std::vector<std::string> result_labels_;
  std::set<uint32_t> evaluators_;
  std::map<uint32_t, LocalReport> reports_;
  struct Departure {
    std::string stage, cause, reason;
  };
  std::map<int64_t, Departure> left_;    // by agent id: who left (or declined) and why
  int64_t reconnect_grace_until_ms_ = 0;  // after a restart
  std::string failure_;
  nlohmann::json smoothing_;  // a smoothing round's choices, per site
  nlohmann::json coordinator_checks_ = nlohmann::json::array();  // PlausibilityCheck of each package, before publishing
};

}  // namespace fedcal::coordinator
