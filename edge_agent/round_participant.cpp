// The agent's part in a calibration round: download the model, calibrate on the private text (worker
// thread), the three secure-aggregation stages, then download and check the result and report.
#include <chrono>
#include <future>
#include <thread>

#include "common/error.h"
#include "edge_agent/agent.h"
#include "edge_agent/private_text.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"
#include "secagg/dp_noise.h"
#include "secagg/secagg_wire.h"

namespace fedcal::edge_agent {
namespace {

// Calibrates on the private text: the round's contribution vector, DP noise (if any) on its counts.
std::vector<uint64_t> compute_statistics(const std::string& package, const SigningKey& key, const AgentConfig& config,
                                         const CalibrationOptions& options, double dp_noise_stddev) {
  const PrivateText text = read_private_text(config.data_dir, config.heldout_fraction);
  LoadedModel loaded = load_model(package, &key);
  if (!loaded.int8.empty()) fail("{}: the round's model is an INT8 package", package);
  auto tokenizer = load_tokenizer(loaded, std::nullopt);
  XnnRuntime runtime(resolve_threads(config.threads, loaded.model.config.parameter_count()));
  const std::string fingerprint = model_fingerprint(loaded.model);
  // One copy of the weights in memory (a 1B-class model on a small board), not the loaded one and the packed one.
  const std::unique_ptr<Transformer> transformer = Transformer::consume(std::move(loaded.model), runtime);
  const CalibrationStats stats = calibrate(*transformer, *tokenizer, text.calibration, fingerprint, options);
  std::vector<uint64_t> vector = contribution_vector(stats);
  add_skellam_noise(contribution_counts(vector), dp_noise_stddev);
  return vector;
}

}  // namespace

bool Agent::holds_round(uint64_t round_id, const char* message) {
  if (round_ && round_->params.id == round_id) return true;
  // E.g. this agent restarted after joining: its secrets are gone, so it can never answer. Said at
  // once, so the round does not wait for it until a deadline.
  leave_round(round_id, wire::RoundLeave::Cause::NOT_IN_ROUND,
              fmt::format("'{}' for round {}, which this agent does not hold (it restarted or left it)", message, round_id));
  return false;
}

void Agent::on_announce(wire::RoundConfig::Reader config) {
  if (round_ && round_->params.id == config.getRoundId()) {
    // Announced again (after a reconnect, or the coordinator lost our join): our answer so far goes again.
    resend_answer("the round was announced again");
    return;
  }
  if (round_ && round_->phase != Phase::kReported) {
    // The coordinator runs one round at a time: a new announcement means ours is over (e.g. the
    // coordinator restarted and failed it). A worker still computing for it finishes in the background.
    log(fmt::format("round {} announced: abandoning round {}", config.getRoundId(), round_->params.id));
    retire_round();
  }
  RoundParams params;
  params.id = config.getRoundId();
  params.model_sha256 = config.getModelSha256().cStr();
  params.model_bytes = config.getModelBytes();
  params.sequences = config.getSequences();
  params.seq_len = config.getSeqLen();
  params.mantissa_bits = config.getMantissaBits();
  params.min_exponent = config.getMinExponent();
  params.max_exponent = config.getMaxExponent();
  params.dp_noise_stddev = config.getDpNoiseStddev();
  params.min_survivors = config.getMinSurvivors();
  params.importance = config.getImportance();
  params.block_checks = config.getBlockChecks();
  if (params.sequences == 0 || params.sequences > 1000000 || params.seq_len < 2 || params.seq_len > 65536 ||
      params.model_bytes == 0 || params.model_bytes > (uint64_t{1} << 40) || !(params.dp_noise_stddev >= 0) ||
      params.min_survivors < 2) {
    fail("roundAnnounce: a field is out of range");
  }
  HistogramLayout layout{params.mantissa_bits, params.min_exponent, params.max_exponent};
  layout.validate();
  if (const std::string problem = private_text_problem(config_.data_dir); !problem.empty()) {
    leave_round(params.id, wire::RoundLeave::Cause::NO_PRIVATE_TEXT, problem);  // the round does not wait for us
    return;
  }
  auto work = std::make_unique<RoundWork>();
  work->params = params;
  work->model = open_download(params.model_sha256, params.model_bytes);
  round_ = std::move(work);
  busy_ = true;
  try {
    make_room_for(*round_->model);
  } catch (const Error& error) {
    leave_round(params.id, wire::RoundLeave::Cause::DISK_FULL, error.what());
    return;
  }
  log(fmt::format("round {}: {} sequences x {} tokens on model {}{}", params.id, params.sequences, params.seq_len,
                  params.model_sha256.substr(0, 16), params.importance ? ", with importance sums" : ""));
  chunk_retry_.trigger();
}

void Agent::advance() {
  if (!round_) return;
  RoundWork& work = *round_;
  if (work.phase == Phase::kDownloading) {
    if (!work.model->complete()) {
      request_chunk(*work.model, chunk_retry_);
      return;
    }
    const RoundParams params = work.params;
    const std::string package = work.model->path();
    CalibrationOptions options;
    options.sequences = static_cast<int>(params.sequences);
    options.seq_len = static_cast<int>(params.seq_len);
    options.layout = {params.mantissa_bits, params.min_exponent, params.max_exponent};
    options.importance = params.importance;
    work.statistics = std::async(std::launch::async, [this, package, options, noise = params.dp_noise_stddev] {
      return compute_statistics(package, coordinator_signing_key_, config_, options, noise);
    });
    work.phase = Phase::kCalibrating;
    return;
  }
  if (work.phase == Phase::kCalibrating && work.statistics.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    work.input = work.statistics.get();
    work.secagg = std::make_unique<SecAggClient>();
    const AdvertisedKeys keys = work.secagg->advertise();
    auto message = std::make_unique<OutgoingMessage>();
    auto join = message->body().initJoin();
    join.setRoundId(work.params.id);
    join.setCipherPublic(as_data(keys.cipher_public));
    join.setMaskPublic(as_data(keys.mask_public));
    join.setVectorLength(work.input.size());
    join.setNarrowLanes(true);
    join.setEphemeralShareKeys(true);
    join.setNeighbourSurvivors(true);
    join.setSealsSelfMaskShares(true);
    send_answer(std::move(message), "join");
    inject_fault("exit-after-join");
    work.phase = Phase::kJoined;
    log(fmt::format("round {}: statistics ready ({} sequences, {} tokens); joined", work.params.id,
                    work.input[work.input.size() - 2], work.input.back()));
    return;
  }
  if (work.phase == Phase::kFetchingResults) {
    for (auto& [label, download] : work.results) {
      if (!download->complete()) {
        request_chunk(*download, chunk_retry_);  // one at a time, in order
        return;
      }
    }
    const std::string fp32 = work.model->path();
    std::vector<std::pair<std::string, std::string>> packages;
    for (auto& [label, download] : work.results) packages.emplace_back(label, download->path());
    const LocalCheckOptions options = local_check_options(config_);
    const bool block_checks = work.params.block_checks;
    work.checks = std::async(std::launch::async, [this, fp32, packages, options, block_checks] {
      const PrivateText text = read_private_text(config_.data_dir, config_.heldout_fraction);
      const std::string& heldout = text.heldout.empty() ? text.calibration : text.heldout;
      std::vector<LocalCheck> checks;
      for (const auto& [label, path] : packages) {
        checks.push_back(check_package(label, fp32, path, coordinator_signing_key_, heldout, options));
      }
      // The calibration-free baselines: the round model's weights in INT8 at the fleet package's
      // granularity (its FP32 layers kept, none fine-grained), activations quantized at run time per
      // token and (if asked) per block of 32 channels of each token.
      for (const auto& [label, path] : packages) {
        if (label != "fleet" && label.rfind("group:", 0) != 0 && label.rfind("class:", 0) != 0) continue;
        LocalCheckOptions dynamic = options;
        dynamic.activations = ActivationQuantization::kDynamic;
        dynamic.weights_from_fp32 = true;
        checks.push_back(check_package(kDynamicCheckLabel, fp32, path, coordinator_signing_key_, heldout, dynamic));
        if (block_checks) {
          dynamic.activations = ActivationQuantization::kDynamicBlocks;
          checks.push_back(check_package(kDynamicBlocksCheckLabel, fp32, path, coordinator_signing_key_, heldout, dynamic));
        }
        break;
      }
      return checks;
    });
    work.phase = Phase::kChecking;
    busy_ = true;
    return;
  }
  if (work.phase == Phase::kChecking && work.checks.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    auto message = std::make_unique<OutgoingMessage>();
    auto report = message->body().initLocalReport();
    report.setRoundId(work.params.id);
    try {
      const std::vector<LocalCheck> checks = work.checks.get();
      auto list = report.initChecks(static_cast<unsigned>(checks.size()));
      for (size_t i = 0; i < checks.size(); ++i) {
        auto out = list[static_cast<unsigned>(i)];
        out.setLabel(checks[i].label);
        out.setTokens(checks[i].tokens);
        out.setMeanKl(checks[i].mean_kl);
        out.setTop1Agreement(checks[i].top1_agreement);
        out.setMeanNll(checks[i].mean_nll);
        out.setReferenceMeanNll(checks[i].reference_mean_nll);
        out.setDecodeTokensPerSecond(checks[i].decode_tokens_per_second);
        out.setReferenceDecodeTokensPerSecond(checks[i].reference_decode_tokens_per_second);
        out.setDecodeSpread(checks[i].decode_spread);
        out.setReferenceDecodeSpread(checks[i].reference_decode_spread);
        log(fmt::format("round {}: {} model: KL {:.5f}, top-1 {:.2f}%, {:.1f} (+-{:.0f}%) vs {:.1f} (+-{:.0f}%) tokens/s",
                        work.params.id, checks[i].label, checks[i].mean_kl, 100 * checks[i].top1_agreement,
                        checks[i].decode_tokens_per_second, 50 * checks[i].decode_spread,
                        checks[i].reference_decode_tokens_per_second, 50 * checks[i].reference_decode_spread));
      }
    } catch (const std::exception& error) {
      report.setError(error.what());
      log(fmt::format("round {}: local check failed: {}", work.params.id, error.what()));
    }
    inject_fault("exit-after-checks");  // the report is never sent
    send_answer(std::move(message), "localReport");
    work.phase = Phase::kReported;
    busy_ = false;
  }
}

void Agent::on_round_keys(wire::RoundKeys::Reader keys) {
  if (!holds_round(keys.getRoundId(), "roundKeys")) return;
  if (round_->phase > Phase::kJoined) {
    // Asked again (our shareKeys was lost): the same shares go again; new ones would not fit the others'.
    resend_answer("the coordinator sent roundKeys again");
    return;
  }
  if (round_->phase != Phase::kJoined) fail("roundKeys for round {} not expected now", keys.getRoundId());
  const SecAggConfig config = read_round_keys_config(keys, round_->params.min_survivors);
  if (config.vector_length != round_->input.size()) fail("roundKeys: vector length {} differs from ours", config.vector_length);
  const std::map<uint32_t, AdvertisedKeys> neighbours = read_round_keys_neighbours(keys);
  const auto shares = round_->secagg->share_keys(config, keys.getIndex(), neighbours);
  auto message = std::make_unique<OutgoingMessage>();
  auto out = message->body().initShareKeys();
  out.setRoundId(config.round_id);
  write_encrypted_shares(shares, out.initShares(static_cast<unsigned>(shares.size())));
  out.setSelfMaskCommitment(as_data(round_->secagg->self_mask_commitment()));
  send_answer(std::move(message), "shareKeys");
  inject_fault("exit-after-shares");
  round_->phase = Phase::kShared;
}

void Agent::on_shares(wire::SharesForYou::Reader delivery) {
  // Again after masking when the coordinator excluded a participant: mask without it.
  if (!holds_round(delivery.getRoundId(), "sharesForYou")) return;
  if (round_->phase > Phase::kMasked) {
    resend_answer("the coordinator sent sharesForYou after unmasking");
    return;
  }
  if (round_->phase != Phase::kShared && round_->phase != Phase::kMasked)
    fail("sharesForYou for round {} not expected now", delivery.getRoundId());
  const std::vector<EncryptedShare> shares = read_encrypted_shares(delivery.getShares(), "sharesForYou");
  auto message = std::make_unique<OutgoingMessage>();
  auto out = message->body().initMaskedInput();
  out.setRoundId(delivery.getRoundId());
  // A share that does not decrypt: its sender is named to the coordinator, which excludes it and
  // sends the others' shares again; nothing is masked until then.
  const std::vector<uint32_t> bad = round_->secagg->undecryptable(shares);
  if (!bad.empty()) {
    log(fmt::format("round {}: the shares of participant(s) {} do not decrypt; asking the coordinator to exclude them",
                    delivery.getRoundId(), fmt::join(bad, ", ")));
    auto list = out.initBadShares(static_cast<unsigned>(bad.size()));
    for (size_t i = 0; i < bad.size(); ++i) list.set(static_cast<unsigned>(i), bad[i]);
    send_answer(std::move(message), "maskedInput");
    return;
  }
  const std::vector<uint64_t> masked = round_->secagg->mask_input(round_->input, shares);
  const uint32_t lane_bits = round_->secagg->config().lane_bits;
  write_lane_vector(masked, lane_bits, out.initValues(static_cast<unsigned>(masked.size() * lane_bits / 8)));
  auto with = out.initMaskedWith(static_cast<unsigned>(shares.size()));
  for (size_t i = 0; i < shares.size(); ++i) with.set(static_cast<unsigned>(i), shares[i].from);
  send_answer(std::move(message), "maskedInput");
  inject_fault("exit-after-masked-input");
  round_->phase = Phase::kMasked;  // the plain input is kept until unmasking, in case of an exclusion
}

void Agent::on_open_share(wire::ShareOpenRequest::Reader request) {
  // A neighbour says our share to it does not decrypt: the ephemeral secret that sealed it lets the
  // coordinator check (that one share only; the library answers once per round).
  if (!holds_round(request.getRoundId(), "shareOpenRequest")) return;
  if (!round_->secagg) fail("shareOpenRequest for round {} not expected now", request.getRoundId());
  const Key32 secret = round_->secagg->share_opening(request.getHolder());
  log(fmt::format("round {}: participant {} complains about our share to it; opening it to the coordinator", request.getRoundId(),
                  request.getHolder()));
  OutgoingMessage message;
  auto out = message.body().initShareOpening();
  out.setRoundId(request.getRoundId());
  out.setHolder(request.getHolder());
  out.setEphemeralSecret(as_data(secret));
  send(message);
}

void Agent::on_unmask(wire::UnmaskRequest::Reader request) {
  if (!holds_round(request.getRoundId(), "unmaskRequest")) return;
  if (round_->phase > Phase::kMasked) {
    // Our secrets are gone once revealed: the kept answer is the only copy.
    resend_answer("the coordinator sent unmaskRequest again");
    return;
  }
  if (round_->phase != Phase::kMasked) fail("unmaskRequest for round {} not expected now", request.getRoundId());
  auto message = std::make_unique<OutgoingMessage>();
  answer_unmask_request(*round_->secagg, request, coordinator_signing_key_, message->body().initUnmaskShares());
  send_answer(std::move(message), "unmaskShares");
  round_->input.clear();   // only masked vectors ever left; the plain one is not kept
  round_->secagg.reset();  // nothing more to reveal, ever
  round_->phase = Phase::kRevealed;
}

void Agent::on_result(wire::RoundResult::Reader result) {
  if (!holds_round(result.getRoundId(), "roundResult")) return;
  if (round_->phase == Phase::kFetchingResults || round_->phase == Phase::kChecking) return;  // already on it
  if (round_->phase == Phase::kReported) {
    resend_answer("the coordinator sent roundResult again");
    return;
  }
  if (result.getModels().size() > 8) fail("roundResult: {} models", result.getModels().size());
  round_->results.clear();
  for (const auto model : result.getModels()) {
    round_->results.emplace_back(model.getLabel().cStr(), open_download(model.getSha256().cStr(), model.getBytes()));
  }
  for (const auto& [label, download] : round_->results) {
    try {
      make_room_for(*download);
    } catch (const Error& error) {
      leave_round(result.getRoundId(), wire::RoundLeave::Cause::DISK_FULL, error.what());
      return;
    }
  }
  round_->phase = Phase::kFetchingResults;
  chunk_retry_.trigger();
  busy_ = true;
}

}  // namespace fedcal::edge_agent
