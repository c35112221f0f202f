#include "coordinator/round.h"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <filesystem>

#include "common/error.h"
#include "common/hex.h"
#include "common/spread.h"
#include "coordinator/artifact_store.h"
#include "coordinator/speed_figure.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"
#include "models/quant/importance.h"
#include "models/quant/recipe.h"
#include "protocol/relay_frames.h"
#include "secagg/secagg_wire.h"

namespace fedcal::coordinator {
namespace {

using Body = wire::Envelope::Body;

}  // namespace

void RoundHost::fault_point(const std::string& point) {
  const std::string& fault = config().fault_injection;
  if (point.rfind("pause-sent:", 0) == 0) {
    // The whole process stops (every thread), as a SIGSTOP from outside does; the test sends SIGCONT.
    if (fault != point && fault != "pause-sent:any") return;
    log("fault injection: SIGSTOP at " + point);
    ::kill(::getpid(), SIGSTOP);
    return;
  }
  if (fault != point) return;
  log("fault injection: SIGKILL at " + point);
  ::kill(::getpid(), SIGKILL);
}

int64_t stall_grace_until(const RoundHost& host, int64_t gap_ms) {
  return host.monotonic_ms() + std::max<int64_t>(host.config().agent_timeout_ms, gap_ms);
}

void remove_abandoned_job_files(std::future<QuantizationJobResult>& job, const std::function<void(const std::string&)>& log) {
  try {
    for (const std::string& path : job.get().created_files()) {
      std::error_code ignored;
      std::filesystem::remove(path, ignored);
      log(fmt::format("removed {}: its round was aborted while it was being made", path));
    }
  } catch (const std::exception& error) {
    log(fmt::format("an aborted round's quantization job ended with: {}", error.what()));
  }
}

namespace {

// Deletes the aggregate statistics of all but the newest round_stats_keep rounds.
void prune_round_stats(RoundHost& host) {
  const int keep = host.config().round_stats_keep;
  if (keep <= 0) return;
  for (const auto& [round, path] : host.store().aggregates_beyond(keep)) {
    std::error_code ignored;
    std::filesystem::remove(path, ignored);
    host.store().forget_aggregate(round);
    host.log(fmt::format("removed the statistics of round {} ({}): round_stats_keep = {}", round, path, keep));
  }
}

}  // namespace

std::vector<std::pair<std::string, int64_t>> recorded_results(const RoundRecord& record) {
  std::vector<std::pair<std::string, int64_t>> out;
  const nlohmann::json report = nlohmann::json::parse(record.report_json, nullptr, false);
  if (!report.is_object()) return out;
  for (const auto& entry : report.value("models", nlohmann::json::array())) {
    if (entry.is_object() && entry.value("model", nlohmann::json()).is_number_integer())
      out.emplace_back(entry.value("label", std::string("fleet")), entry["model"].get<int64_t>());
  }
  return out;
}

Signature RoundHost::sign(std::span<const std::byte> /*message*/) const {
  fail("this coordinator host cannot sign (relay groups need the coordinator's signing key)");
}

void RoundHost::abandon(std::future<QuantizationJobResult> job) {
  job.wait();
  remove_abandoned_job_files(job, [this](const std::string& line) { log(line); });
}

// L2 norm of one calibration sequence's contribution to the statistics vector: at most seq_len
// tokens, each adding width_p counts at point p. Gaussian mechanism: sigma = delta2 * sqrt(2 ln(1.25/delta)) / epsilon.
double dp_total_stddev(const ModelConfig& config, const RoundSettings& settings) {
  const double sensitivity = settings.seq_len * std::sqrt(squared_widths(config));
  return sensitivity * std::sqrt(2 * std::log(1.25 / settings.dp_delta)) / settings.dp_epsilon;
}

namespace {

// The fleet's figures for one package: every reporting agent counts once, with equal weight, so one
// agent moves a figure by at most 1/n of its own value's distance (a forged token count buys no
// weight). Tokens are summed for information only.
nlohmann::json check_summary(const std::vector<const PackageCheck*>& checks) {
  double tokens = 0, kl = 0, top1 = 0, nll = 0, reference_nll = 0;
  std::vector<double> decode, reference_decode, speedup, run_spread;
  for (const PackageCheck* check : checks) {
    tokens += static_cast<double>(check->tokens);
    kl += check->mean_kl;
    top1 += check->top1_agreement;
    nll += check->mean_nll;
    reference_nll += check->reference_mean_nll;
    decode.push_back(check->decode_tokens_per_second);
    reference_decode.push_back(check->reference_decode_tokens_per_second);
    if (check->reference_decode_tokens_per_second > 0)
      speedup.push_back(check->decode_tokens_per_second / check->reference_decode_tokens_per_second);
    run_spread.push_back(std::max(check->decode_spread, check->reference_decode_spread));
  }
  if (checks.empty()) return {{"agents", 0}, {"tokens", 0}};
  const double agents = static_cast<double>(checks.size());
  // Speeds differ between devices and swing on each: the median over agents with its range, and the
  // median of the agents' own run-to-run spread.
  const Spread int8 = spread_of(decode), fp32 = spread_of(reference_decode), ratio = spread_of(speedup);
  return {{"agents", checks.size()},
          {"tokens", tokens},
          {"mean_kl", kl / agents},
          {"top1_agreement", top1 / agents},
          {"perplexity_int8", std::exp(nll / agents)},
          {"perplexity_fp32", std::exp(reference_nll / agents)},
          {"decode_tokens_per_second_int8", int8.median},
          {"decode_tokens_per_second_int8_range", {int8.low, int8.high}},
          {"decode_tokens_per_second_fp32", fp32.median},
          {"decode_tokens_per_second_fp32_range", {fp32.low, fp32.high}},
          {"decode_speedup", ratio.median},
          {"decode_speedup_range", {ratio.low, ratio.high}},
          {"decode_run_spread", spread_of(run_spread).median},
          {"decode_speedup_noisy", is_noisy(spread_of(run_spread).median)}};
}

}  // namespace

nlohmann::json PackageCheck::to_json() const {
  return {{"label", label},
          {"tokens", tokens},
          {"mean_kl", mean_kl},
          {"top1_agreement", top1_agreement},
          {"mean_nll", mean_nll},
          {"reference_mean_nll", reference_mean_nll},
          {"decode_tokens_per_second", decode_tokens_per_second},
          {"reference_decode_tokens_per_second", reference_decode_tokens_per_second},
          {"decode_spread", decode_spread},
          {"reference_decode_spread", reference_decode_spread}};
}

nlohmann::json LocalReport::to_json() const {
  nlohmann::json list = nlohmann::json::array();
  for (const PackageCheck& check : checks) list.push_back(check.to_json());
  return {{"agent", agent}, {"error", error}, {"checks", list}};
}

LocalReport LocalReport::from_wire(int64_t agent, wire::LocalReport::Reader report) {
  LocalReport out;
  out.agent = agent;
  out.error = read_text(report.getError(), 1000);
  for (const auto check : report.getChecks()) {
    PackageCheck entry;
    entry.label = read_text(check.getLabel(), 64);
    // Every figure within what a real check can produce (protocol/wire.h), so one agent's share of
    // a fleet mean is bounded too.
    entry.tokens = check.getTokens();
    if (entry.tokens > kMaxReportedTokens) fail("localReport: {} tokens checked (at most {})", entry.tokens, kMaxReportedTokens);
    entry.mean_kl = read_figure(check.getMeanKl(), kMaxReportedNats, "localReport.meanKl");
    entry.top1_agreement = read_figure(check.getTop1Agreement(), 1, "localReport.top1Agreement");
    entry.mean_nll = read_figure(check.getMeanNll(), kMaxReportedNats, "localReport.meanNll");
    entry.reference_mean_nll = read_figure(check.getReferenceMeanNll(), kMaxReportedNats, "localReport.referenceMeanNll");
    entry.decode_tokens_per_second =
        read_figure(check.getDecodeTokensPerSecond(), kMaxReportedTokensPerSecond, "localReport.decodeTokensPerSecond");
    entry.reference_decode_tokens_per_second = read_figure(check.getReferenceDecodeTokensPerSecond(), kMaxReportedTokensPerSecond,
                                                           "localReport.referenceDecodeTokensPerSecond");
    entry.decode_spread = read_figure(check.getDecodeSpread(), kMaxReportedSpread, "localReport.decodeSpread");
    entry.reference_decode_spread = read_figure(check.getReferenceDecodeSpread(), kMaxReportedSpread, "localReport.referenceDecodeSpread");
    out.checks.push_back(std::move(entry));
  }
  return out;
}

LocalReport LocalReport::from_json(const nlohmann::json& json) {
  LocalReport out;
  out.agent = json.value("agent", int64_t{0});
  out.error = json.value("error", "");
  for (const auto& check : json.value("checks", nlohmann::json::array())) {
    PackageCheck entry;
    entry.label = check.value("label", "");
    entry.tokens = check.value("tokens", uint64_t{0});
    entry.mean_kl = check.value("mean_kl", 0.0);
    entry.top1_agreement = check.value("top1_agreement", 0.0);
    entry.mean_nll = check.value("mean_nll", 0.0);
    entry.reference_mean_nll = check.value("reference_mean_nll", 0.0);
    entry.decode_tokens_per_second = check.value("decode_tokens_per_second", 0.0);
    entry.reference_decode_tokens_per_second = check.value("reference_decode_tokens_per_second", 0.0);
    entry.decode_spread = check.value("decode_spread", 0.0);
    entry.reference_decode_spread = check.value("reference_decode_spread", 0.0);
    out.checks.push_back(std::move(entry));
  }
  return out;
}

Round::Round(RoundHost& host, int64_t id, RoundSettings settings, ModelRecord model)
    : host_(host), id_(id), settings_(std::move(settings)), model_(std::move(model)) {}

RoundModel load_round_model(const ModelRecord& model) {
  if (model.kind != "fp32") fail("model {} is an INT8 package; rounds calibrate an FP32 model", model.id);
  const LoadedModel loaded = load_model(model.path);
  return {loaded.model.config, model_fingerprint(loaded.model)};
}

std::unique_ptr<Round> Round::start(RoundHost& host, const RoundSettings& settings, const ModelRecord& model,
                                    const RoundModel& loaded) {
  if (model.kind != "fp32") fail("model {} is an INT8 package; rounds calibrate an FP32 model", model.id);
  if ((settings.smooth || !settings.target_kl.empty()) && host.config().reference_text.empty())
    fail("{} measures on public reference text: set reference_text in the coordinator's configuration",
         settings.smooth ? "smooth" : "target_kl");
  HistogramLayout layout;
  layout.mantissa_bits = settings.mantissa_bits;
  layout.max_exponent = settings.max_exponent;
  // Bit-width budget: one agent adds at most sequences x seq_len x (widest point) to any count, so
  // the sum over every agent that could join must stay below 2^63 (signed, for DP noise) - no wrap.
  const ModelConfig& config = loaded.config;
  const auto widest = static_cast<uint64_t>(widest_point(config));
  // An importance sum grows by at most kImportanceTokenCap per token; it travels in limbs
  // (contribution_vector), each of which one agent fills to at most importance_limb_bound.
  const uint64_t tokens = static_cast<uint64_t>(settings.sequences_per_agent) * static_cast<uint64_t>(settings.seq_len);
  const uint64_t per_token = settings.importance() ? std::max<uint64_t>(widest, kImportanceTokenCap) : widest;
  const uint64_t agents = settings.max_agents > 0 ? static_cast<uint64_t>(settings.max_agents) : host.store().agents().size();
  if (tokens > (uint64_t{1} << 63) / per_token || (agents > 0 && tokens * per_token > (uint64_t{1} << 63) / agents)) {
    fail("{} of {} agents x {} sequences x {} tokens could exceed 2^63 and wrap; lower sequences_per_agent or set max_agents",
         settings.importance() ? "importance sums" : "counts", agents, settings.sequences_per_agent, settings.seq_len);
  }
  const uint64_t per_agent = settings.importance() ? std::max(tokens * widest, importance_limb_bound(tokens)) : tokens * widest;
  const int64_t id = host.store().create_round(model.id, settings.to_json().dump());
  std::unique_ptr<Round> round(new Round(host, id, settings, model));
  round->template_stats_ = CalibrationStats::empty_for(loaded.config, loaded.fingerprint, layout, settings.importance());
  round->count_bound_per_agent_ = per_agent;
  if (settings.dp_epsilon > 0) {
    round->dp_total_stddev_ = dp_total_stddev(loaded.config, settings);
    round->dp_noise_stddev_ = round->dp_total_stddev_ / std::sqrt(static_cast<double>(settings.min_agents));
  }
  host.store().audit("operator", "round started",
                     fmt::format("round {} on model {}: {}", id, model.id, settings.to_json().dump()));
  round->enter(RoundStage::kCollecting, host.config().join_timeout_ms);
  for (const int64_t agent : host.online_agents()) round->announce(agent);
  host.fault_point("pause-sent:collecting");
  return round;
}

std::unique_ptr<Round> Round::recover(RoundHost& host, const RoundRecord& record) {
  const RoundSettings settings = RoundSettings::from_json(nlohmann::json::parse(record.config_json));
  const auto model = host.store().model(record.model_id);
  if (!model) fail("round {}: model {} is missing", record.id, record.model_id);
  std::unique_ptr<Round> round(new Round(host, record.id, settings, *model));
  round->stage_ = record.stage;
  // Agents reconnect within a second or two of a restart: until then none counts as gone.
  round->reconnect_grace_until_ms_ = host.monotonic_ms() + host.config().agent_timeout_ms;
  for (const auto& participant : host.store().participants(record.id)) {
    const auto index = static_cast<uint32_t>(participant.index);
    round->participant_index_[participant.agent_id] = static_cast<uint32_t>(round->participants_.size());
    round->participants_.push_back(participant.agent_id);
    if (participant.status != ParticipantStatus::kDropped) round->evaluators_.insert(index);
    if (!participant.reason.empty()) round->left_[participant.agent_id] = {"", "", participant.reason};
    if (participant.status == ParticipantStatus::kReported && !participant.report_json.empty()) {
      const nlohmann::json report = nlohmann::json::parse(participant.report_json, nullptr, false);
      if (report.is_object()) round->reports_[index] = LocalReport::from_json(report);
    }
  }
  const auto aggregate = host.store().aggregate_path(record.id);
  if (record.stage == RoundStage::kQuantizing && aggregate) {
    host.log(fmt::format("round {}: resuming the quantization job after a restart", record.id));
    round->begin_quantizing(read_stats(*aggregate), round->settings_.median_group_scales()
                                                        ? ArtifactStore(host.config().artifacts_dir()).group_stats(record.id)
                                                        : std::vector<CalibrationStats>{});
  } else if (record.stage == RoundStage::kEvaluating && record.result_model_id) {
    host.log(fmt::format("round {}: resuming evaluation after a restart", record.id));
    // The results as the report saved them when evaluation began (labels included); a round
    // recorded before reports held them has its fleet and public packages.
    for (const auto& [label, id] : recorded_results(record)) {
      const auto result = host.store().model(id);
      if (!result) fail("round {}: its result model {} is missing", record.id, id);
      round->results_.push_back(*result);
      round->result_labels_.push_back(label);
    }
    if (round->results_.empty()) {
      round->results_.push_back(*host.store().model(*record.result_model_id));
      round->result_labels_.push_back("fleet");
      if (record.baseline_model_id) {
        round->results_.push_back(*host.store().model(*record.baseline_model_id));
        round->result_labels_.push_back("public");
      }
    }
    round->enter(RoundStage::kEvaluating, host.config().report_timeout_ms);
    for (const uint32_t index : round->evaluators_) round->send_result(round->participants_[index]);
  } else {
    round->fail_round(
        fmt::format("the coordinator restarted during stage '{}'; the secure-aggregation secrets of that stage are held "
                    "only in memory, so the round cannot resume",
                    name(record.stage)));
  }
  return round;
}

void Round::enter(RoundStage stage, int64_t timeout_ms) {
  const int64_t now = host_.monotonic_ms();
  if (entered_) stage_ms_[std::string(name(stage_))] = now - stage_started_ms_;
  entered_ = true;
  stage_ = stage;
  stage_started_ms_ = now;
  stage_deadline_ms_ = now + timeout_ms;
  host_.store().set_round_stage(id_, stage);
  host_.log(fmt::format("round {}: {}", id_, name(stage)));
  host_.fault_point(fmt::format("kill-entering:{}", name(stage)));
}

void Round::announce(int64_t agent_id) {
  OutgoingMessage message;
  auto config = message.body().initRoundAnnounce().initConfig();
  config.setRoundId(static_cast<uint64_t>(id_));
  config.setModelSha256(model_.sha256);
  config.setModelBytes(static_cast<uint64_t>(model_.bytes));
  config.setSequences(static_cast<uint32_t>(settings_.sequences_per_agent));
  config.setSeqLen(static_cast<uint32_t>(settings_.seq_len));
  config.setMantissaBits(static_cast<uint8_t>(template_stats_.layout.mantissa_bits));
  config.setMinExponent(static_cast<int16_t>(template_stats_.layout.min_exponent));
  config.setMaxExponent(static_cast<int16_t>(template_stats_.layout.max_exponent));
  config.setDpNoiseStddev(dp_noise_stddev_);
  config.setMinSurvivors(static_cast<uint32_t>(settings_.min_agents));
  config.setImportance(settings_.importance());
  config.setBlockChecks(true);
  announced_.insert(agent_id);
  host_.send(agent_id, message);
}

void Round::agent_online(int64_t agent_id, std::optional<uint64_t> held_round) {
  if (stage_ == RoundStage::kCollecting && index_of(agent_id) < 0) {
    left_.erase(agent_id);  // it declined before (e.g. no text): asked again
    announce(agent_id);
  }
  const int index = index_of(agent_id);
  if (index >= 0 && held_round && *held_round != static_cast<uint64_t>(id_)) {
    leave(agent_id, "notInRound", fmt::format("its hello holds no part in round {} (it restarted)", id_));
    return;
  }
  if (index < 0 || left_.count(agent_id)) return;
  // Back after a silence, or on a new connection: what it was sent last may be lost with the old one,
  // so the request of the current stage goes again if it has not answered (its answer, if it did
  // answer meanwhile, comes again as a copy and is dropped).
  const auto u = static_cast<uint32_t>(index);
  if (secagg_ && stage_ == RoundStage::kSharing && u1_.count(u) && !secagg_->shared().count(u)) send_round_keys(u);
  if (secagg_ && stage_ == RoundStage::kMasking && secagg_->shared().count(u) && !secagg_->survivors().count(u) &&
      !secagg_->excluded().count(u)) {
    send_shares(u);
  }
  if (secagg_ && stage_ == RoundStage::kUnmasking && secagg_->survivors().count(u) && !secagg_->revealed().count(u))
    send_unmask_request(u);
  if (stage_ == RoundStage::kEvaluating && evaluators_.count(u) && !reports_.count(u)) send_result(agent_id);
}

void Round::postpone(int64_t ms) {
  stage_deadline_ms_ += ms;
  if (quorum_at_ms_ > 0) quorum_at_ms_ += ms;
  reconnect_grace_until_ms_ = std::max(reconnect_grace_until_ms_ + ms, stall_grace_until(host_, ms));
}

int Round::index_of(int64_t agent_id) const {
  const auto it = participant_index_.find(agent_id);
  return it == participant_index_.end() ? -1 : static_cast<int>(it->second);
}

bool Round::expected(int64_t agent_id) const {
  if (left_.count(agent_id)) return false;
  return host_.is_online(agent_id) || host_.monotonic_ms() < reconnect_grace_until_ms_;
}

bool Round::waiting_for(const std::set<uint32_t>& pool, const std::set<uint32_t>& answered) const {
  for (const uint32_t index : pool) {
    if (!answered.count(index) && expected(participants_[index])) return true;
  }
  return false;
}

void Round::leave(int64_t agent_id, const std::string& cause, const std::string& reason) {
  if (finished()) return;
  const int index = index_of(agent_id);
  if (index < 0 && !announced_.count(agent_id)) return;  // not asked to take part: nothing to stop waiting for
  if (index >= 0 && reports_.count(static_cast<uint32_t>(index))) return;  // its part is done
  if (left_.count(agent_id)) return;
  left_[agent_id] = {std::string(name(stage_)), cause, reason};
  const std::string what =
      fmt::format("round {}: agent {} {} in stage '{}' ({}): {}", id_, agent_id, index >= 0 ? "left" : "declined", name(stage_),
                  cause, reason);
  host_.log(what);
  host_.store().audit("agent " + std::to_string(agent_id), index >= 0 ? "left round" : "declined round", what);
  if (index >= 0) {
    // From quantizing on its statistics are in the sum: it stays a contributor, with the reason.
    const bool contributed = stage_ == RoundStage::kQuantizing || stage_ == RoundStage::kEvaluating;
    host_.store().set_participant_status(id_, agent_id, contributed ? ParticipantStatus::kRevealed : ParticipantStatus::kDropped,
                                         cause + ": " + reason);
  }
}

void Round::handle(int64_t agent_id, wire::Envelope::Reader envelope) {
  const auto body = envelope.getBody();
  const int index = index_of(agent_id);
  auto expect_round = [&](uint64_t round_id) {
    if (round_id != static_cast<uint64_t>(id_)) fail("round {} is not the active round ({})", round_id, id_);
  };
  auto expect_stage = [&](RoundStage stage) {
    if (stage_ != stage) fail("'{}' is not expected in stage '{}' of round {}", body_name(envelope), name(stage_), id_);
    if (index < 0) fail("agent {} is not a participant of round {}", agent_id, id_);
  };
  // Every round message is idempotent: agents re-send until acknowledged, and after a reconnect or
  // a pause copies and late arrivals are normal. A copy of what is in, or a message for a stage that
  // has ended, is logged and dropped, not blamed on the agent. Only its own stage's message is
  // expected before that stage.
  auto late_or_copy = [&](RoundStage stage, bool have_it) {
    if (index < 0) fail("agent {} is not a participant of round {}", agent_id, id_);
    if (stage_ == stage && !have_it) return false;
    if (static_cast<int>(stage_) < static_cast<int>(stage))
      fail("'{}' is not expected in stage '{}' of round {}", body_name(envelope), name(stage_), id_);
    host_.log(fmt::format("round {}: agent {}: {} '{}' dropped", id_, agent_id,
                          stage_ == stage ? "a copy of its" : fmt::format("a late (stage '{}')", name(stage_)),
                          body_name(envelope)));
    // Late to share or to mask: the round went on without it (a dropout), and it is told so.
    const bool dropped = !have_it && (stage == RoundStage::kSharing || stage == RoundStage::kMasking);
    if (dropped)
      tell_left_behind(agent_id, fmt::format("its '{}' came after stage '{}' ended", body_name(envelope), name(stage)));
    return true;
  };
  switch (body.which()) {
    case Body::JOIN: {
      const auto join = body.getJoin();
      expect_round(join.getRoundId());
      const uint64_t expected = contribution_length(template_stats_);
      if (join.getVectorLength() != expected) {
        fail("join: statistics vector of {} values, round {} expects {}", join.getVectorLength(), id_, expected);
      }
      AdvertisedKeys keys{read_key32(join.getCipherPublic(), "join.cipherPublic"),
                          read_key32(join.getMaskPublic(), "join.maskPublic")};
      if (index >= 0) {
        // A copy (re-sent); other keys from the same agent are a different join, which is refused.
        const AdvertisedKeys& joined = keys_[static_cast<size_t>(index)];
        if (joined.cipher_public != keys.cipher_public || joined.mask_public != keys.mask_public)
          fail("agent {} already joined round {} with other keys", agent_id, id_);
        host_.log(fmt::format("round {}: agent {}: a copy of its 'join' dropped", id_, agent_id));
        return;
      }
      if (stage_ != RoundStage::kCollecting) {
        // Too late: the round went on without it. It is told, so it drops its part.
        host_.log(fmt::format("round {}: agent {} joined in stage '{}', too late", id_, agent_id, name(stage_)));
        tell_left_behind(agent_id, "it joined after stage 'collecting' ended");
        return;
      }
      // A low-order key would make every honest neighbour's key agreement fail: refused here, so
      // the round goes on without the agent that sent it.
      check_x25519_public_key(keys.cipher_public, "join.cipherPublic", key_checker_);
      check_x25519_public_key(keys.mask_public, "join.maskPublic", key_checker_);
      left_.erase(agent_id);  // declined before, able now
      participant_index_[agent_id] = static_cast<uint32_t>(participants_.size());
      participants_.push_back(agent_id);
      keys_.push_back(keys);
      all_support_narrow_lanes_ = all_support_narrow_lanes_ && join.getNarrowLanes();
      all_support_ephemeral_share_keys_ = all_support_ephemeral_share_keys_ && join.getEphemeralShareKeys();
      all_seal_self_mask_shares_ = all_seal_self_mask_shares_ && join.getSealsSelfMaskShares();
      if (join.getNeighbourSurvivors()) neighbour_survivors_.insert(static_cast<uint32_t>(participants_.size() - 1));
      u1_.insert(static_cast<uint32_t>(participants_.size() - 1));
      host_.store().add_participant(id_, agent_id, static_cast<int>(participants_.size() - 1));
      if (static_cast<int>(participants_.size()) == settings_.min_agents) quorum_at_ms_ = host_.monotonic_ms();
      if (settings_.max_agents > 0 && static_cast<int>(participants_.size()) >= settings_.max_agents) begin_sharing();
      return;
    }
    case Body::SHARE_KEYS: {
      const auto share_keys = body.getShareKeys();
      expect_round(share_keys.getRoundId());
      if (late_or_copy(RoundStage::kSharing, secagg_ && secagg_->shared().count(static_cast<uint32_t>(index)))) return;
      std::vector<EncryptedShare> shares = read_encrypted_shares(share_keys.getShares(), "shareKeys");
      std::optional<Key32> commitment;
      if (share_keys.hasSelfMaskCommitment())
        commitment = read_key32(share_keys.getSelfMaskCommitment(), "shareKeys.selfMaskCommitment");
      secagg_->add_shares(static_cast<uint32_t>(index), std::move(shares), commitment);
      host_.store().set_participant_status(id_, agent_id, ParticipantStatus::kShared);
      return;
    }
    case Body::MASKED_INPUT: {
      const auto masked = body.getMaskedInput();
      expect_round(masked.getRoundId());
      if (late_or_copy(RoundStage::kMasking, secagg_ && secagg_->survivors().count(static_cast<uint32_t>(index)))) return;
      const auto me = static_cast<uint32_t>(index);
      if (false_complainers_.count(me)) {
        tell_left_behind(agent_id, "its complaint was false");
        return;
      }
      if (masked.getBadShares().size() > 0) {
        if (masked.getBadShares().size() > participants_.size()) fail("maskedInput: {} bad shares", masked.getBadShares().size());
        std::vector<uint32_t> senders;
        for (const uint32_t sender : masked.getBadShares()) senders.push_back(sender);
        complain(me, senders);
        return;
      }
      // The values must carry the masks of exactly the senders of the latest sharesForYou (an input
      // masked before an exclusion is stale: its agent has been sent the shares again).
      std::vector<uint32_t> senders;
      for (const EncryptedShare& share : secagg_->shares_for(me)) senders.push_back(share.from);
      std::sort(senders.begin(), senders.end());
      std::vector<uint32_t> masked_with;
      for (const uint32_t sender : masked.getMaskedWith()) masked_with.push_back(sender);
      std::sort(masked_with.begin(), masked_with.end());
      if (masked_with != senders && !(masked_with.empty() && secagg_->excluded().empty())) {
        // Masked before an exclusion (it crossed the sharesForYou it was sent again): dropped, and the
        // input masked with the new shares is waited for.
        host_.log(
            fmt::format("round {}: agent {}: a masked input with {} participants' masks dropped (stale: the shares it was "
                        "sent last are from {})",
                        id_, agent_id, masked_with.size(), senders.size()));
        return;
      }
      secagg_->add_masked_input(me, read_lane_vector(masked.getValues(), secagg_->config().vector_length,
                                                     secagg_->config().lane_bits, "maskedInput.values"));
      host_.store().set_participant_status(id_, agent_id, ParticipantStatus::kMasked);
      return;
    }
    case Body::SHARE_OPENING: {
      const auto opening = body.getShareOpening();
      expect_round(opening.getRoundId());
      if (index < 0) fail("agent {} is not a participant of round {}", agent_id, id_);
      const auto accused = static_cast<uint32_t>(index);
      const uint32_t complainer = opening.getHolder();
      if (!complaint_checks_.asked(accused, complainer) || stage_ != RoundStage::kMasking) {
        host_.log(fmt::format("round {}: agent {}: a 'shareOpening' no open complaint asks for dropped (late or a copy)", id_,
                              agent_id));
        return;
      }
      const Key32 secret = read_key32(opening.getEphemeralSecret(), "shareOpening.ephemeralSecret");
      const EncryptedShare* share = secagg_->share(accused, complainer);
      complaint_checks_.settle(accused, complainer,
                               share && share_opens(secagg_->config(), *share, keys_[complainer].cipher_public, secret),
                               host_.monotonic_ms());
      return;
    }
    case Body::UNMASK_SHARES: {
      const auto unmask = body.getUnmaskShares();
      expect_round(unmask.getRoundId());
      // Once the unmasking runs (secagg_ handed to it), a reveal is as late as a copy.
      if (late_or_copy(RoundStage::kUnmasking, !secagg_ || secagg_->revealed().count(static_cast<uint32_t>(index)))) return;
      const std::vector<RevealedShare> shares = read_revealed_shares(unmask.getShares(), "unmaskShares");
      secagg_->add_revealed(static_cast<uint32_t>(index), shares);
      host_.store().set_participant_status(id_, agent_id, ParticipantStatus::kRevealed);
      return;
    }
    case Body::LOCAL_REPORT: {
      const auto report = body.getLocalReport();
      expect_round(report.getRoundId());
      expect_stage(RoundStage::kEvaluating);
      if (!evaluators_.count(static_cast<uint32_t>(index))) fail("agent {} did not contribute to round {}", agent_id, id_);
      if (reports_.count(static_cast<uint32_t>(index))) {
        host_.log(fmt::format("round {}: agent {}: a copy of its 'localReport' dropped", id_, agent_id));
        return;
      }
      LocalReport local = LocalReport::from_wire(agent_id, report);
      // One check per package the agent was sent, no other: a duplicated or foreign label is refused.
      std::set<std::string> expected;
      for (const size_t result : results_for(agent_id)) {
        expected.insert(result_labels_[result]);
        if (result_labels_[result] != "public") {  // the fleet package's weights, calibration-free
          expected.insert(kDynamicCheckLabel);
          expected.insert(kDynamicBlocksCheckLabel);
        }
      }
      std::set<std::string> seen;
      for (const PackageCheck& check : local.checks) {
        if (!expected.count(check.label)) fail("localReport: agent {} was not sent a '{}' package", agent_id, check.label);
        if (!seen.insert(check.label).second) fail("localReport: '{}' checked twice", check.label);
      }
      host_.store().save_participant_report(id_, agent_id, local.to_json().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
      reports_[static_cast<uint32_t>(index)] = std::move(local);
      return;
    }
    default:
      fail("'{}' is not a round message", body_name(envelope));
  }
}

void Round::complain(uint32_t complainer, const std::vector<uint32_t>& senders) {
  // A complaint: shares to `complainer` that do not decrypt, checked by the rules of
  // secagg/complaint_checks.h. Without ephemeral share keys (an older agent in the round) the senders
  // are excluded on the complaint alone.
  std::vector<uint32_t> now;
  bool added = false;
  for (const uint32_t sender : senders) {
    if (secagg_->excluded().count(sender) || complaint_checks_.open(complainer, sender)) continue;  // a copy
    if (sender >= participants_.size() || !secagg_->share(sender, complainer))
      fail("maskedInput: a complaint about participant {}, which sent this agent no share", sender);
    if (!secagg_->config().ephemeral_share_keys) {
      now.push_back(sender);
      continue;
    }
    complaint_checks_.add(complainer, sender);
    added = true;
    host_.store().audit("agent " + std::to_string(participants_[complainer]), "complaint",
                        fmt::format("round {}: agent {} reports that the share of agent {} does not decrypt", id_,
                                    participants_[complainer], participants_[sender]));
  }
  if (!now.empty()) exclude_senders(complainer, now, "complaints cannot be checked in this round (an older agent joined)");
  if (!added && now.empty()) {
    host_.log(fmt::format("round {}: agent {}: a copy of its complaint dropped", id_, participants_[complainer]));
  }
  complaint_checks_.ask_next(complainer, host_.monotonic_ms());
}

void Round::ask_opening(uint32_t accused, uint32_t complainer) {
  host_.log(fmt::format("round {}: agent {} is asked to open its share to agent {}, which complains it does not decrypt", id_,
                        participants_[accused], participants_[complainer]));
  OutgoingMessage message;
  auto request = message.body().initShareOpenRequest();
  request.setRoundId(static_cast<uint64_t>(id_));
  request.setHolder(complainer);
  host_.send(participants_[accused], message);
}

void Round::exclude_senders(uint32_t complainer, const std::vector<uint32_t>& senders, const std::string& why) {
  // Excluded as if they had never shared, and everyone they sent a share to masks again without them.
  const std::vector<uint32_t> again = secagg_->exclude(complainer, senders);
  for (const uint32_t sender : senders) {
    const std::string what =
        fmt::format("round {}: agent {} reports that the share of agent {} does not decrypt: agent {} is excluded ({})", id_,
                    participants_[complainer], participants_[sender], participants_[sender], why);
    host_.log(what);
    host_.store().audit("agent " + std::to_string(participants_[sender]), "excluded from round", what);
    host_.store().set_participant_status(id_, participants_[sender], ParticipantStatus::kDropped);
    complaints_.push_back({{"complainer", participants_[complainer]},
                           {"accused", participants_[sender]},
                           {"excluded", participants_[sender]},
                           {"why", why}});
  }
  for (const uint32_t v : again) send_shares(v);
}

void Round::complaint_false(uint32_t complainer, uint32_t accused) {
  // The share opens and is well formed: the complainer is left out of the round (a dropout: its
  // masked input is never taken, its pairwise masks are removed in unmasking).
  false_complainers_.insert(complainer);
  const int64_t agent = participants_[complainer];
  const std::string what = fmt::format(
      "round {}: agent {} complained that the share of agent {} does not decrypt, but it opens and is well formed: agent {} is "
      "left out of the round (a false complaint)",
      id_, agent, participants_[accused], agent);
  host_.log(what);
  host_.store().audit("agent " + std::to_string(agent), "false complaint", what);
  complaints_.push_back(
      {{"complainer", agent}, {"accused", participants_[accused]}, {"excluded", agent}, {"why", "a false complaint"}});
  leave(agent, "falseComplaint",
        fmt::format("the share of agent {} it complained about opens and is well formed", participants_[accused]));
  tell_left_behind(agent, "its complaint was false");
}

void Round::send_round_abort(int64_t agent_id, const std::string& reason) {
  OutgoingMessage message;
  auto abort = message.body().initRoundAbort();
  abort.setRoundId(static_cast<uint64_t>(id_));
  abort.setReason(reason);
  host_.send(agent_id, message);
}

void Round::tell_left_behind(int64_t agent_id, const std::string& why) {
  send_round_abort(agent_id, fmt::format("round {} went on without this agent: {}", id_, why));
}

void Round::begin_sharing() {
  const auto n = static_cast<uint32_t>(participants_.size());
  if (n < static_cast<uint32_t>(settings_.min_agents)) {
    fail_round(fmt::format("only {} agents joined; the round needs at least {}", n, settings_.min_agents));
    return;
  }
  SecAggConfig config;
  config.round_id = static_cast<uint64_t>(id_);
  config.participants = n;
  config.neighbours =
      settings_.neighbours > 0 ? std::min<uint32_t>(static_cast<uint32_t>(settings_.neighbours), n - 1) : default_neighbours(n);
  config.threshold = settings_.threshold > 0 ? static_cast<uint32_t>(settings_.threshold) : default_threshold(config.neighbours);
  config.min_survivors = static_cast<uint32_t>(settings_.min_agents);
  config.graph_seed = random_key();
  config.vector_length = contribution_length(template_stats_);
  const uint32_t narrowest = narrowest_lane_bits(count_bound_per_agent_, n, dp_noise_stddev_ * std::sqrt(static_cast<double>(n)));
  if (settings_.lane_bits == 32 && narrowest != 32) {
    fail_round(fmt::format("lane_bits = 32, but {} agents x {} counts each (and the DP noise) could reach 2^31; use 0 or 64", n,
                           count_bound_per_agent_));
    return;
  }
  if (settings_.lane_bits == 32 && !all_support_narrow_lanes_) {
    fail_round("lane_bits = 32, but an agent of an older fedcal version joined, which masks in 64-bit lanes only; use 0 or 64");
    return;
  }
  config.lane_bits = settings_.lane_bits == 64 || !all_support_narrow_lanes_ ? 64 : narrowest;
  config.ephemeral_share_keys = all_support_ephemeral_share_keys_;
  if (settings_.relay_group_size > 0) {
    begin_relay_groups(config);
    return;
  }
  try {
    secagg_ = std::make_unique<SecAggServer>(config, keys_);
  } catch (const Error& error) {
    fail_round(error.what());
    return;
  }
  enter(RoundStage::kSharing, host_.config().stage_timeout_ms);
  for (uint32_t u = 0; u < n; ++u) send_round_keys(u);
  host_.fault_point("pause-sent:sharing");
}

void Round::send_round_keys(uint32_t u) {
  OutgoingMessage message;
  write_round_keys(secagg_->config(), u, secagg_->neighbours(u), keys_, message.body().initRoundKeys());
  host_.send(participants_[u], message);
}

void Round::begin_masking() {
  if (secagg_->shared().size() < static_cast<size_t>(settings_.min_agents)) {
    fail_round(fmt::format("only {} agents shared their keys; the round needs at least {}", secagg_->shared().size(),
                           settings_.min_agents));
    return;
  }
  enter(RoundStage::kMasking, host_.config().stage_timeout_ms);
  for (const uint32_t u : secagg_->shared()) send_shares(u);
  host_.fault_point("pause-sent:masking");
}

void Round::send_shares(uint32_t index) {
  OutgoingMessage message;
  auto delivery = message.body().initSharesForYou();
  delivery.setRoundId(static_cast<uint64_t>(id_));
  const auto shares = secagg_->shares_for(index);
  write_encrypted_shares(shares, delivery.initShares(static_cast<unsigned>(shares.size())));
  host_.send(participants_[index], message);
}

void Round::begin_unmasking() {
  const auto& survivors = secagg_->survivors();
  if (survivors.size() < static_cast<size_t>(settings_.min_agents)) {
    fail_round(fmt::format("only {} agents sent masked statistics; the aggregate of fewer than {} is never unmasked",
                           survivors.size(), settings_.min_agents));
    return;
  }
  for (const uint32_t u : secagg_->shared()) {
    if (!survivors.count(u)) host_.store().set_participant_status(id_, participants_[u], ParticipantStatus::kDropped);
  }
  enter(RoundStage::kUnmasking, host_.config().stage_timeout_ms);
  for (const uint32_t u : survivors) send_unmask_request(u);
  host_.fault_point("pause-sent:unmasking");
}

void Round::send_unmask_request(uint32_t u) {
  OutgoingMessage message;
  write_unmask_request(static_cast<uint64_t>(id_), u, secagg_->survivors(), secagg_->neighbours(u),
                       neighbour_survivors_.count(u) > 0, message.body().initUnmaskRequest());
  host_.send(participants_[u], message);
}

void Round::begin_relay_groups(const SecAggConfig& round_config) {
  if (!all_seal_self_mask_shares_) {
    fail_round(
        "relay_group_size is set, but an agent of an older fedcal version joined, which cannot seal its shares to "
        "the coordinator; use relay_group_size = 0");
    return;
  }
  // Participants by the relay they are connected through, in the order they joined.
  std::map<std::string, std::vector<uint32_t>> by_relay;
  std::map<uint32_t, RoundHost::RelayedAgent> where;
  for (uint32_t u = 0; u < participants_.size(); ++u) {
    const std::optional<RoundHost::RelayedAgent> relayed = host_.relayed(participants_[u]);
    if (!relayed) {
      fail_round(fmt::format("relay_group_size is set, but agent {} is not connected through a relay", participants_[u]));
      return;
    }
    by_relay[relayed->relay].push_back(u);
    where[u] = *relayed;
  }
  // Each relay's participants in as few groups of at most relay_group_size as hold at least
  // min_agents each, sizes even; a relay with fewer than min_agents participants has none.
  const auto min_size = static_cast<size_t>(settings_.min_agents);
  const auto max_size = static_cast<size_t>(settings_.relay_group_size);
  for (const auto& [relay, members] : by_relay) {
    const size_t groups = std::min((members.size() + max_size - 1) / max_size, members.size() / min_size);
    if (groups == 0) {
      for (const uint32_t u : members) {
        leave(participants_[u], "relayGroup", fmt::format("fewer than min_agents = {} participants behind its relay", min_size));
        send_round_abort(participants_[u],
                         fmt::format("round {}: too few participants behind this agent's relay for a group", id_));
      }
      continue;
    }
    size_t at = 0;
    for (size_t g = 0; g < groups; ++g) {
      const size_t size = members.size() / groups + (g < members.size() % groups ? 1 : 0);
      RelayGroup group;
      group.relay = relay;
      group.relay_key = where[members.front()].relay_key;
      group.members.assign(members.begin() + static_cast<ptrdiff_t>(at), members.begin() + static_cast<ptrdiff_t>(at + size));
      at += size;
      relay_groups_.push_back(std::move(group));
    }
  }
  if (relay_groups_.empty()) {
    fail_round(fmt::format("no relay has min_agents = {} participants behind it for a group", min_size));
    return;
  }
  if (settings_.median_group_scales() && relay_groups_.size() < kMedianScaleMinGroups) {
    fail_round(fmt::format("group_scales 'median' needs {} or more relay groups; {} participants make {} (relay_group_size = {})",
                           kMedianScaleMinGroups, participants_.size(), relay_groups_.size(), settings_.relay_group_size));
    return;
  }
  round_key_ = std::make_shared<const X25519KeyPair>(X25519KeyPair::generate());
  for (size_t g = 0; g < relay_groups_.size(); ++g) {
    RelayGroup& group = relay_groups_[g];
    const auto n = static_cast<uint32_t>(group.members.size());
    SecAggConfig& config = group.config;
    config = round_config;
    config.group_id = g + 1;
    config.self_masks_sealed = true;
    config.participants = n;
    config.neighbours =
        settings_.neighbours > 0 ? std::min<uint32_t>(static_cast<uint32_t>(settings_.neighbours), n - 1) : default_neighbours(n);
    config.threshold = settings_.threshold > 0
                           ? std::min<uint32_t>(static_cast<uint32_t>(settings_.threshold), config.neighbours + 1)
                           : default_threshold(config.neighbours);
    config.graph_seed = random_key();
    RelayGroupStart start;
    start.config = config;
    for (const uint32_t u : group.members)
      start.members.push_back({where[u].key, where[u].route, keys_[u], neighbour_survivors_.count(u) > 0});
    start.coordinator_key = round_key_->public_key();
    const Bytes statement = group_key_statement(config.round_id, config.group_id, start.coordinator_key);
    const Signature signature = host_.sign(std::as_bytes(std::span(statement)));
    start.coordinator_key_signature.assign(reinterpret_cast<const uint8_t*>(signature.data()),
                                           reinterpret_cast<const uint8_t*>(signature.data()) + signature.size());
    start.stage_timeout_ms = static_cast<uint32_t>(host_.config().stage_timeout_ms);
    const std::vector<std::byte> payload = encode_group_start(start);
    host_.send_to_relay(group.relay, kRelayGroupFrame,
                        std::string(reinterpret_cast<const char*>(payload.data()), payload.size()));
  }
  host_.log(fmt::format("round {}: secure aggregation in {} groups at {} relays", id_, relay_groups_.size(), by_relay.size()));
  // Three stages at the relays, each up to stage_timeout_ms, and the results' way back.
  enter(RoundStage::kAggregating, 3 * static_cast<int64_t>(host_.config().stage_timeout_ms) + 10000);
}

void Round::relay_group_result(const std::string& relay_key, std::span<const std::byte> payload) {
  const auto [round, group_id] = peek_group_result_ids(payload, kDefaultMaxMessageBytes);
  if (round != static_cast<uint64_t>(id_) || stage_ != RoundStage::kAggregating || aggregation_.valid())
    fail("a result of round {} group {}, not expected now", round, group_id);
  if (group_id == 0 || group_id > relay_groups_.size()) fail("round {} has no group {}", id_, group_id);
  RelayGroup& group = relay_groups_[group_id - 1];
  if (group.relay_key != relay_key) fail("round {} group {} is not this relay's", id_, group_id);
  if (group.result) return;  // a copy
  group.result = decode_group_result(payload, kDefaultMaxMessageBytes, group.config);
  const RelayGroupResult& result = *group.result;
  const std::set<uint32_t> shared(result.shared.begin(), result.shared.end());
  const std::set<uint32_t> survivors(result.aggregate.survivors.begin(), result.aggregate.survivors.end());
  for (uint32_t i = 0; i < group.members.size(); ++i) {
    const ParticipantStatus status = result.aggregate.sealed.count(i) ? ParticipantStatus::kRevealed
                                     : survivors.count(i)             ? ParticipantStatus::kMasked
                                                                      : ParticipantStatus::kDropped;
    host_.store().set_participant_status(id_, participants_[group.members[i]],
                                         shared.count(i) ? status : ParticipantStatus::kDropped);
  }
  host_.log(fmt::format("round {} group {}: {}", id_, group_id,
                        result.failure.empty()
                            ? fmt::format("{} of {} members in its sum", survivors.size(), group.members.size())
                            : "failed: " + result.failure));
}

void Round::finish_group_aggregation() {
  secagg_summary_ = relay_groups_summary();
  // Each group's sum opened with the round key, the sums added (exact modulo 2^lane_bits in any
  // order); a group that failed or does not open is left out, with its reason.
  struct Opening {
    std::vector<uint32_t> members;
    std::optional<RelayGroupResult> result;
  };
  std::vector<Opening> openings;
  for (const RelayGroup& group : relay_groups_) openings.push_back({group.members, group.result});
  const uint32_t lane_bits = relay_groups_.front().config.lane_bits;
  const uint64_t length = relay_groups_.front().config.vector_length;
  const auto min_agents = static_cast<size_t>(settings_.min_agents);
  std::shared_ptr<const X25519KeyPair> key = round_key_;
  const bool keep_groups = settings_.median_group_scales();  // each group's sum, for the scales' medians
  aggregation_ = std::async(std::launch::async, [openings = std::move(openings), key, lane_bits, length, min_agents,
                                                 keep_groups] {
    Aggregation out;
    out.lane_bits = lane_bits;
    std::vector<uint64_t> sum(length, 0);
    std::vector<std::string> failures;
    for (size_t g = 0; g < openings.size(); ++g) {
      const Opening& opening = openings[g];
      if (!opening.result) {
        failures.push_back(fmt::format("group {}: no result from its relay", g + 1));
        continue;
      }
      if (!opening.result->failure.empty()) {
        failures.push_back(fmt::format("group {}: {}", g + 1, opening.result->failure));
        continue;
      }
      std::string why;
      std::set<uint32_t> wrong;
      std::optional<std::vector<uint64_t>> group_sum;
      try {
        group_sum = open_group_sum(opening.result->aggregate, *key, &why, &wrong);
      } catch (const Error& error) {
        why = error.what();
      }
      for (const uint32_t i : wrong) out.wrong_revealers.insert(opening.members.at(i));
      if (!group_sum) {
        failures.push_back(why);
        continue;
      }
      for (size_t i = 0; i < sum.size(); ++i) sum[i] += (*group_sum)[i];
      for (const uint32_t i : opening.result->aggregate.survivors) out.survivors.insert(opening.members.at(i));
      if (keep_groups) {
        out.group_agents.push_back(opening.result->aggregate.survivors.size());
        out.group_sums.push_back(std::move(*group_sum));
      }
    }
    reduce_to_lanes(sum, lane_bits);
    if (out.survivors.size() < min_agents) {
      out.why = fmt::format("{} agents in the opened groups' sums, fewer than the minimum of {}{}{}", out.survivors.size(),
                            min_agents, failures.empty() ? "" : "; ", fmt::join(failures, "; "));
      out.survivors.clear();
    } else {
      out.sum = std::move(sum);
      out.why = fmt::format("{}", fmt::join(failures, "; "));  // groups left out, if any
    }
    return out;
  });
}

nlohmann::json Round::relay_groups_summary() const {
  nlohmann::json groups = nlohmann::json::array();
  for (size_t g = 0; g < relay_groups_.size(); ++g) {
    const RelayGroup& group = relay_groups_[g];
    nlohmann::json entry = {{"group", g + 1},
                            {"members", group.members.size()},
                            {"neighbours", group.config.neighbours},
                            {"threshold", group.config.threshold},
                            {"lane_bits", group.config.lane_bits}};
    if (group.result) {
      entry["shared"] = group.result->shared.size();
      entry["masked"] = group.result->aggregate.survivors.size();
      entry["revealed"] = group.result->aggregate.sealed.size();
      if (!group.result->failure.empty()) entry["failure"] = group.result->failure;
    } else {
      entry["state"] = "running at its relay";
    }
    groups.push_back(entry);
  }
  return groups;
}

void Round::finish_aggregation() {
  secagg_summary_ = secagg_summary();
  std::shared_ptr<const SecAggServer> server(std::move(secagg_));
  aggregation_ = std::async(std::launch::async, [server] {
    Aggregation out;
    try {
      out.sum = server->unmasked_sum(&out.why, 0, &out.wrong_revealers);
    } catch (const Error& error) {
      out.why = error.what();
    }
    out.survivors = server->survivors();
    out.lane_bits = server->config().lane_bits;
    return out;
  });
}

void Round::complete_aggregation(Aggregation aggregation) {
  std::optional<std::vector<uint64_t>>& sum = aggregation.sum;
  for (const uint32_t index : aggregation.wrong_revealers) {
    // Outvoted by the right shares (the sum is exact), but on record.
    const std::string what = fmt::format(
        "round {}: agent {} revealed unmasking shares that do not fit the others; they were left out", id_, participants_[index]);
    host_.log(what);
    host_.store().audit("agent " + std::to_string(participants_[index]), "wrong unmasking shares", what);
  }
  if (!sum) {
    fail_round("secure aggregation could not be completed: " + aggregation.why);
    return;
  }
  if (!aggregation.why.empty()) host_.log(fmt::format("round {}: relay groups left out of the sum: {}", id_, aggregation.why));
  // With distributed DP the noisy sum is read as signed and counts below 8 standard deviations of
  // the total noise are zeroed (post-processing: the guarantee is unchanged), so buckets that are
  // pure noise do not stretch the ranges.
  // 8 sigma: a pure-noise count survives with probability ~1e-15, so across ~10^5 counts none does.
  auto stats_of = [&](const std::vector<uint64_t>& lanes, size_t agents) {
    CalibrationStats out = stats_from_contribution(template_stats_, lanes);
    const double noise_floor = 8 * dp_noise_stddev_ * std::sqrt(static_cast<double>(agents));
    if (dp_noise_stddev_ > 0) {
      for (uint64_t& count : out.counts) {
        if (static_cast<double>(lane_to_signed(count, aggregation.lane_bits)) < noise_floor) count = 0;
      }
    }
    return out;
  };
  CalibrationStats stats = stats_of(*sum, aggregation.survivors.size());
  std::vector<CalibrationStats> groups;
  if (settings_.median_group_scales()) {
    for (size_t g = 0; g < aggregation.group_sums.size(); ++g)
      groups.push_back(stats_of(aggregation.group_sums[g], aggregation.group_agents[g]));
    if (groups.size() < kMedianScaleMinGroups) {
      fail_round(fmt::format("group_scales 'median' needs {} or more opened relay groups; {} opened{}", kMedianScaleMinGroups,
                             groups.size(), aggregation.why.empty() ? "" : " (" + aggregation.why + ")"));
      return;
    }
    ArtifactStore(host_.config().artifacts_dir()).add_group_stats(groups, id_);
  }
  evaluators_ = aggregation.survivors;
  host_.store().audit(
      "coordinator", "aggregate unmasked",
      fmt::format("round {}: {} agents, {} sequences, {} tokens", id_, evaluators_.size(), stats.sequences, stats.tokens));
  const std::string path = ArtifactStore(host_.config().artifacts_dir()).add_round_stats(stats, id_);
  stage_ms_[std::string(name(stage_))] = host_.monotonic_ms() - stage_started_ms_;
  aggregate_sha256_ = stats.sha256();
  host_.store().save_aggregate(id_, path, aggregate_sha256_, static_cast<int>(evaluators_.size()),
                               static_cast<int64_t>(stats.sequences), static_cast<int64_t>(stats.tokens));
  begin_quantizing(std::move(stats), std::move(groups));
}

void Round::begin_quantizing(CalibrationStats stats, std::vector<CalibrationStats> groups) {
  enter(RoundStage::kQuantizing, 0);
  QuantizationJobInput input;
  input.round_id = id_;
  input.fp32_package = model_.path;
  if (settings_.smoothing_round != 0) {
    const auto smoothing = host_.store().round(settings_.smoothing_round);
    const auto original = smoothing ? host_.store().model(smoothing->model_id) : std::nullopt;
    if (original) {
      input.unsmoothed_package = original->path;
    } else {
      host_.log(fmt::format("round {}: the model smoothing round {} started from is gone; target_kl 'dynamic' is measured on the "
                            "smoothed model", id_, settings_.smoothing_round));
    }
  }
  input.stats = std::move(stats);
  input.group_stats = std::move(groups);
  input.settings = settings_;
  input.signing_key_path = host_.config().signing_key_path();
  input.artifacts_dir = host_.config().artifacts_dir();
  input.reference_text = host_.config().reference_text;
  input.threads = host_.config().threads;
  if (host_.config().fault_injection == "stall-quantizing") input.stall_ms = 5000;
  if (settings_.device_classes && runs_fine_grained(parse_target_runtime(settings_.runtime))) {
    input.static_class = std::any_of(participants_.begin(), participants_.end(), [this](int64_t agent) {
      const auto record = host_.store().agent(agent);
      return record && !has_int8_dot_product(*record);
    });
  }
  job_ = std::async(std::launch::async, [input = std::move(input)] { return run_quantization_job(input); });
  host_.fault_point("pause-sent:quantizing");
}

int64_t Round::record_result(const BuiltPackage& built, const std::string& kind, const std::string& label) {
  ModelRecord model;
  model.sha256 = built.sha256;
  model.kind = kind;
  model.path = built.path;
  model.bytes = built.bytes;
  model.description = built.description;
  model.round_id = id_;
  model.id = host_.store().add_model(model);
  results_.push_back(model);
  result_labels_.push_back(label);
  return model.id;
}

void Round::finish_smoothing(const BuiltSmoothing& smoothed) {
  const int64_t model = record_result(smoothed.package, "fp32", "smoothed");
  smoothing_ = {{"model", model}, {"smoothed_sites", smoothed.smoothed_sites}, {"sites", smoothed.sites}};
  host_.store().set_round_models(id_, model, std::nullopt);
  host_.log(fmt::format("round {}: {} (model {}); its follow-up round calibrates it", id_, smoothed.package.description, model));
  finish();
}

std::optional<Round::FollowUp> Round::follow_up(Store& store, const RoundRecord& record) {
  if (record.stage != RoundStage::kDone || !record.result_model_id) return std::nullopt;
  FollowUp next{RoundSettings::from_json(nlohmann::json::parse(record.config_json)), {}};
  if (!next.settings.smooth) return std::nullopt;
  const auto model = store.model(*record.result_model_id);
  if (!model) fail("round {}: its smoothed model {} is missing", record.id, *record.result_model_id);
  next.model = *model;
  next.settings.smooth = false;
  next.settings.smoothing_round = record.id;
  next.settings.model_id = model->id;
  return next;
}

void Round::begin_evaluating(const QuantizationJobResult& result) {
  if (result.smoothed) {
    finish_smoothing(*result.smoothed);
    return;
  }
  const int64_t fleet = record_result(result.fleet, "int8", "fleet");
  for (const PlausibilityCheck& check : result.checks) {
    coordinator_checks_.push_back(check.to_json());
    host_.log(fmt::format(
        "round {}: the {} package's KL from FP32 on {}: {:.4g} (at most {:.4g}: {} x max(its recipe there {:.4g}, "
        "dynamic {:.4g}))",
        id_, check.label, check.text, check.kl, check.bound, check.max_ratio, check.same_recipe_kl, check.dynamic_kl));
  }
  for (const BuiltExport& built : result.exports) {
    ExportRecord exported;
    exported.model_id = fleet;
    exported.round_id = id_;
    exported.format = built.format;
    exported.path = built.path;
    exported.sha256 = built.sha256;
    exported.bytes = built.bytes;
    exported.error = built.error;
    host_.store().add_export(exported);
    host_.log(built.error.empty() ? fmt::format("round {}: {} export {} ({})", id_, built.format, built.path, built.description)
                                  : fmt::format("round {}: no {} export: {}", id_, built.format, built.error));
  }
  std::optional<int64_t> baseline;
  if (result.baseline) baseline = record_result(*result.baseline, "int8", "public");
  for (const auto& [label, built] : result.groups) record_result(built, "int8", "group:" + label);
  if (result.static_class) record_result(*result.static_class, "int8", kStaticClassLabel);
  host_.store().set_round_models(id_, fleet, baseline);
  // Every result with its label (the report's "models"), so a restart in evaluating recovers the
  // group and device-class packages too, not only the fleet's and the public one.
  host_.store().set_round_report(id_, status().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  enter(RoundStage::kEvaluating, host_.config().report_timeout_ms);
  for (const uint32_t index : evaluators_) send_result(participants_[index]);
  host_.fault_point("pause-sent:evaluating");
}

std::vector<size_t> Round::results_for(int64_t agent_id) {
  // An agent in a group with its own variant checks that package instead of the default one; else
  // a device without an INT8 dot product checks the static package, where the round built one.
  const auto agent = host_.store().agent(agent_id);
  const std::set<std::string> labels = agent ? agent_labels(*agent) : std::set<std::string>();
  std::vector<size_t> chosen;
  bool grouped = false;
  for (size_t i = 0; i < results_.size(); ++i) {
    const std::string& label = result_labels_[i];
    if (label.rfind("group:", 0) == 0 && labels.count(label.substr(6)) && !grouped) {
      chosen.push_back(i);
      grouped = true;
    }
  }
  for (size_t i = 0; i < results_.size() && !grouped && agent && !has_int8_dot_product(*agent); ++i) {
    if (result_labels_[i] == kStaticClassLabel) {
      chosen.push_back(i);
      grouped = true;
    }
  }
  for (size_t i = 0; i < results_.size(); ++i) {
    const std::string& label = result_labels_[i];
    if (label == "public" || (label == "fleet" && !grouped)) chosen.push_back(i);
  }
  return chosen;
}

bool Round::assigned(int64_t agent_id, const std::string& sha256) {
  if (sha256 == model_.sha256) return announced_.count(agent_id) > 0 || index_of(agent_id) >= 0;
  if (index_of(agent_id) < 0) return false;
  for (const size_t i : results_for(agent_id)) {
    if (results_[i].sha256 == sha256) return true;
  }
  return false;
}

void Round::send_result(int64_t agent_id) {
  const std::vector<size_t> chosen = results_for(agent_id);
  OutgoingMessage message;
  auto result = message.body().initRoundResult();
  result.setRoundId(static_cast<uint64_t>(id_));
  auto list = result.initModels(static_cast<unsigned>(chosen.size()));
  for (size_t k = 0; k < chosen.size(); ++k) {
    list[static_cast<unsigned>(k)].setLabel(result_labels_[chosen[k]]);
    list[static_cast<unsigned>(k)].setSha256(results_[chosen[k]].sha256);
    list[static_cast<unsigned>(k)].setBytes(static_cast<uint64_t>(results_[chosen[k]].bytes));
  }
  host_.send(agent_id, message);
}

void Round::tick() {
  if (finished()) return;
  const bool expired = host_.monotonic_ms() >= stage_deadline_ms_;
  if (stage_ == RoundStage::kCollecting) {
    bool pending = false;
    for (const int64_t agent : announced_) {
      if (pending) break;
      if (index_of(agent) < 0 && expected(agent)) pending = true;
    }
    // With min_agents joined, the rest get as long again as the quorum took (at least join_grace_ms):
    // an announced agent that heartbeats but never joins does not hold the round to its join timeout.
    const bool quorum = static_cast<int>(participants_.size()) >= settings_.min_agents;
    const int64_t grace = std::max<int64_t>(host_.config().join_grace_ms, quorum_at_ms_ - stage_started_ms_);
    const bool graced = quorum && host_.monotonic_ms() - quorum_at_ms_ >= grace;
    if ((!pending && quorum) || graced || expired) {
      if (pending && graced && !expired) {
        host_.log(fmt::format("round {}: starting with the {} joined agents; the others did not join within {} ms of the quorum", id_,
                              participants_.size(), grace));
      }
      begin_sharing();
    }
  } else if (stage_ == RoundStage::kSharing) {
    if (expired || !waiting_for(u1_, secagg_->shared())) begin_masking();
  } else if (stage_ == RoundStage::kMasking) {
    complaint_checks_.settle_stale(host_.monotonic_ms(), host_.config().agent_timeout_ms);
    if (expired || !waiting_for(secagg_->shared(), secagg_->survivors())) begin_unmasking();
  } else if (stage_ == RoundStage::kUnmasking) {
    if (aggregation_.valid()) {
      if (aggregation_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) complete_aggregation(aggregation_.get());
    } else if (expired || !waiting_for(secagg_->survivors(), secagg_->revealed())) {
      finish_aggregation();
    }
  } else if (stage_ == RoundStage::kAggregating) {
    if (aggregation_.valid()) {
      if (aggregation_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) complete_aggregation(aggregation_.get());
    } else if (expired ||
               std::all_of(relay_groups_.begin(), relay_groups_.end(), [](const RelayGroup& group) { return group.result; })) {
      finish_group_aggregation();
    }
  } else if (stage_ == RoundStage::kQuantizing) {
    if (job_.valid() && job_.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
      try {
        begin_evaluating(job_.get());
      } catch (const std::exception& error) {
        // Named by kind where it is not a plain input problem (a read-only artifact store: I/O).
        const ErrorKind kind = kind_of(error);
        std::string reason =
            std::string("quantization failed: ") +
            (kind == ErrorKind::kIo || kind == ErrorKind::kInternal ? std::string(error_kind_name(kind)) + ": " : "") +
            error.what();
        if (dp_noise_stddev_ > 0) {
          reason += fmt::format(
              "; with differential privacy ({}, {}) every count carries noise of stddev {:.0f} and counts below {:.0f} are "
              "dropped: "
              "this round had too little data for that budget (more agents, sequences or a larger epsilon)",
              settings_.dp_epsilon, settings_.dp_delta, dp_noise_stddev_ * std::sqrt(static_cast<double>(evaluators_.size())),
              8 * dp_noise_stddev_ * std::sqrt(static_cast<double>(evaluators_.size())));
        }
        fail_round(reason);
      }
    }
  } else if (stage_ == RoundStage::kEvaluating) {
    std::set<uint32_t> reported;
    for (const auto& [index, report] : reports_) reported.insert(index);
    if (!expired && waiting_for(evaluators_, reported)) return;
    if (reports_.empty()) {
      const auto gone = std::count_if(evaluators_.begin(), evaluators_.end(),
                                      [&](uint32_t index) { return left_.count(participants_[index]) > 0; });
      fail_round(fmt::format("no participant reported its check of the result ({} of {} left, the others {})", gone,
                             evaluators_.size(),
                             expired ? fmt::format("did not report within {} ms", host_.config().report_timeout_ms)
                                     : "are offline"));
      return;
    }
    finish();
  }
}

void Round::finish() {
  host_.store().set_round_report(id_, status().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  enter(RoundStage::kDone, 0);
  host_.store().set_round_report(id_, status().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
  prune_round_stats(host_);
  host_.store().audit("coordinator", "round done", fmt::format("round {}", id_));
}

void Round::fail_round(const std::string& reason) {
  if (finished()) return;
  failure_ = reason;
  // A running quantization job is not waited for here (it can take minutes on the event loop's
  // thread): the host lets it finish and removes what it wrote.
  if (job_.valid()) host_.abandon(std::move(job_));
  std::set<int64_t> told(announced_.begin(), announced_.end());
  told.insert(participants_.begin(), participants_.end());
  for (const int64_t agent : told) {
    if (host_.is_online(agent)) send_round_abort(agent, reason);
  }
  host_.store().set_round_stage(id_, RoundStage::kFailed, reason);
  host_.store().audit("coordinator", "round failed", fmt::format("round {}: {}", id_, reason));
  stage_ = RoundStage::kFailed;
  host_.log(fmt::format("round {}: failed: {}", id_, reason));
  host_.store().set_round_report(id_, status().dump(-1, ' ', false, nlohmann::json::error_handler_t::replace));
}

nlohmann::json Round::secagg_summary() const {
  const auto& config = secagg_->config();
  return {{"participants", config.participants},
          {"neighbours", config.neighbours},
          {"threshold", config.threshold},
          {"lane_bits", config.lane_bits},
          {"shared", secagg_->shared().size()},
          {"masked", secagg_->survivors().size()},
          {"revealed", secagg_->revealed().size()},
          {"checkable_complaints", config.ephemeral_share_keys},
          {"complaints", complaints_}};
}

nlohmann::json Round::agents_status() const {
  // Every agent asked to take part: where it is in this round and, if it left, why.
  std::map<int64_t, nlohmann::json> by_agent;
  for (const int64_t agent : announced_) by_agent[agent] = {{"agent", agent}, {"state", "announced"}};
  for (const auto& participant : host_.store().participants(id_)) {
    by_agent[participant.agent_id] = {{"agent", participant.agent_id},
                                      {"index", participant.index},
                                      {"state", std::string(name(participant.status))}};
  }
  for (const auto& [agent, departure] : left_) {
    nlohmann::json& entry = by_agent[agent];
    entry["agent"] = agent;
    entry["state"] = index_of(agent) >= 0 ? "left" : "declined";
    if (!departure.stage.empty()) entry["stage"] = departure.stage;
    if (!departure.cause.empty()) entry["cause"] = departure.cause;
    entry["reason"] = departure.reason;
  }
  nlohmann::json list = nlohmann::json::array();
  for (auto& [agent, entry] : by_agent) {
    const bool online = host_.is_online(agent);
    entry["online"] = online;
    const std::string state = entry["state"];
    if (!online && state != "left" && state != "declined" && state != "reported") {
      entry["reason"] = fmt::format("offline: silent for more than {} ms", host_.config().agent_timeout_ms);
    }
    list.push_back(std::move(entry));
  }
  return list;
}

nlohmann::json exports_json(const std::vector<ExportRecord>& exports) {
  nlohmann::json out = nlohmann::json::array();
  for (const ExportRecord& e : exports) {
    nlohmann::json entry = {{"format", e.format}, {"bytes", e.bytes}, {"sha256", e.sha256}, {"path", e.path}};
    if (e.round_id) entry["round"] = *e.round_id;
    if (!e.error.empty()) entry["error"] = e.error;
    out.push_back(std::move(entry));
  }
  return out;
}

nlohmann::json Round::status(bool agents) const {
  nlohmann::json json = {{"round", id_},
                         {"model", model_.id},
                         {"stage", name(stage_)},
                         {"settings", settings_.to_json()},
                         {"announced", announced_.size()},
                         {"joined", participants_.size()}};
  if (!failure_.empty()) json["failure"] = failure_;
  if (secagg_) {
    json["secure_aggregation"] = secagg_summary();
  } else if (!secagg_summary_.is_null()) {
    json["secure_aggregation"] = secagg_summary_;
  }
  if (!relay_groups_.empty()) json["relay_groups"] = relay_groups_summary();
  json["contributors"] = evaluators_.size();
  if (!aggregate_sha256_.empty()) json["statistics_sha256"] = aggregate_sha256_;
  json["differential_privacy"] = settings_.dp_epsilon > 0
                                     ? nlohmann::json{{"mechanism", "distributed Skellam"},
                                                      {"epsilon", settings_.dp_epsilon},
                                                      {"delta", settings_.dp_delta},
                                                      {"noise_stddev_per_agent", dp_noise_stddev_},
                                                      {"guarantee_holds_with_at_least_agents", settings_.min_agents}}
                                     : nlohmann::json("off");
  json["stage_ms"] = stage_ms_;
  nlohmann::json models = nlohmann::json::array();
  for (size_t i = 0; i < results_.size(); ++i) {
    models.push_back({{"label", result_labels_[i]},
                      {"model", results_[i].id},
                      {"sha256", results_[i].sha256},
                      {"bytes", results_[i].bytes},
                      {"description", results_[i].description}});
  }
  json["models"] = models;
  if (!results_.empty() && !settings_.exports.empty()) {
    std::vector<ExportRecord> exports = host_.store().exports(results_.front().id);
    std::erase_if(exports, [this](const ExportRecord& e) { return e.round_id != id_; });
    json["exports"] = exports_json(exports);
  }
  json["fp32_bytes"] = model_.bytes;
  if (!smoothing_.is_null()) json["smoothing"] = smoothing_;
  if (!coordinator_checks_.empty()) json["coordinator_checks"] = coordinator_checks_;
  nlohmann::json checks = nlohmann::json::object();
  // (A smoothing round's result is an FP32 model that no agent checks.)
  std::vector<std::string> check_labels = smoothing_.is_null() ? result_labels_ : std::vector<std::string>();
  if (!results_.empty() && smoothing_.is_null()) {
    check_labels.push_back(kDynamicCheckLabel);
    check_labels.push_back(kDynamicBlocksCheckLabel);
  }
  for (const std::string& label : check_labels) {
    std::vector<const PackageCheck*> per_agent;
    for (const auto& [index, report] : reports_) {
      for (const PackageCheck& check : report.checks) {
        if (check.label == label) per_agent.push_back(&check);
      }
    }
    checks[label] = check_summary(per_agent);
  }
  json["checks"] = checks;
  nlohmann::json errors = nlohmann::json::array();
  for (const auto& [index, report] : reports_) {
    if (!report.error.empty()) errors.push_back(report.to_json());
  }
  json["report_errors"] = errors;
  json["reports"] = reports_.size();
  if (agents) json["agents"] = agents_status();
  return json;
}

}  // namespace fedcal::coordinator
