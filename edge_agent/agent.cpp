#include "edge_agent/agent.h"

#include <signal.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "edge_agent/hardware_profile.h"
#include "edge_agent/private_text.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"
#include "secagg/dp_noise.h"
#include "secagg/secagg_wire.h"

namespace fedcal::edge_agent {
namespace {

using Body = wire::Envelope::Body;

int64_t now_ms() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

uint64_t wall_clock_us() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

constexpr uint32_t kChunkRequestBytes = 1 << 20;
constexpr int64_t kChunkRetryMs = 3000;

// Calibrates on the private text: the round's contribution vector, DP noise (if any) on its counts.
std::vector<uint64_t> compute_statistics(const std::string& package, const SigningKey& key, const AgentConfig& config,
                                         uint32_t sequences, uint32_t seq_len, HistogramLayout layout, double dp_noise_stddev) {
  const PrivateText text = read_private_text(config.data_dir, config.heldout_fraction);
  LoadedModel loaded = load_model(package, &key);
  if (!loaded.int8.empty()) fail("{}: the round's model is an INT8 package", package);
  auto tokenizer = load_tokenizer(loaded, std::nullopt);
  XnnRuntime runtime(config.threads > 0 ? config.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  Transformer transformer(loaded.model, runtime);
  CalibrationOptions options;
  options.sequences = static_cast<int>(sequences);
  options.seq_len = static_cast<int>(seq_len);
  options.layout = layout;
  const CalibrationStats stats = calibrate(transformer, *tokenizer, text.calibration, model_fingerprint(loaded.model), options);
  std::vector<uint64_t> vector = contribution_vector(stats);
  add_skellam_noise(contribution_counts(vector), dp_noise_stddev);
  return vector;
}

}  // namespace

Agent::Agent(AgentConfig config)
    : config_(std::move(config)),
      enrollment_([&] {
        auto enrollment = Enrollment::read(config_.enrollment_path());
        if (!enrollment) fail("not enrolled: run `fedcal-agent enroll --config FILE --token TOKEN` (or set enroll_token)");
        return *enrollment;
      }()),
      coordinator_signing_key_(enrollment_.signing_key()),
      keys_(CurveKeyPair::read(config_.curve_key_path())),
      context_(1),
      socket_(context_, zmq::socket_type::dealer),
      next_sequence_(wall_clock_us()),
      slots_(config_.state_dir) {
  SocketLimits limits;
  limits.reconnect_interval_max_ms = config_.reconnect_interval_max_ms;
  configure_curve_client(socket_, keys_, config_.coordinator_key, limits);
  socket_.connect(config_.coordinator);
  log(fmt::format("agent {} ({}) connecting to {}", enrollment_.agent_id, config_.name, config_.coordinator));
  std::filesystem::create_directories(config_.state_dir);
  slots_.record_start();
  if (slots_.crashes_since_activation() > 0) {
    log(fmt::format("{} unclean exits since the active model was activated", slots_.crashes_since_activation()));
  }
  active_path_ = slots_.active().empty() ? "" : slots_.path(slots_.active());
  local_server_ = std::make_unique<LocalServer>(config_.serve_endpoint(), coordinator_signing_key_,
                                                config_.threads > 0 ? config_.threads : 1, [this] {
                                                  std::lock_guard lock(active_path_mutex_);
                                                  return active_path_;
                                                });
}

Agent::~Agent() {
  local_server_.reset();
  // Workers still computing must finish before the state they read goes away.
  retire_round();
  if (activation_ && activation_->check.valid()) activation_->check.wait();
  for (auto& work : retired_) {
    if (work->statistics.valid()) work->statistics.wait();
    if (work->checks.valid()) work->checks.wait();
  }
}

void Agent::retire_round() {
  if (round_) retired_.push_back(std::move(round_));
  busy_ = false;
  std::erase_if(retired_, [](const std::unique_ptr<RoundWork>& work) {
    const auto idle = [](auto& future) {
      return !future.valid() || future.wait_for(std::chrono::seconds(0)) == std::future_status::ready;
    };
    return idle(work->statistics) && idle(work->checks);
  });
}

void Agent::log(const std::string& line) const {
  std::fprintf(stderr, "[agent %s] %s\n", config_.name.c_str(), line.c_str());
  std::fflush(stderr);
}

void Agent::send(OutgoingMessage& message) {
  const std::vector<std::byte> bytes = message.encode(++next_sequence_);
  socket_.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
}

void Agent::inject_fault(const char* point) {
  if (config_.fault_injection != point) return;
  log(fmt::format("fault injection: exiting after {}", point + 11));
  // Let the I/O thread put the last message on the wire, then vanish without a goodbye.
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  if (std::string_view(point) == "exit-after-activation") ::kill(::getpid(), SIGKILL);  // a crash, as a bad model might cause
  std::_Exit(17);
}

void Agent::send_hello() {
  const HardwareProfile hardware = detect_hardware(config_.labels);
  OutgoingMessage message;
  auto hello = message.body().initHello();
  hello.setName(config_.name);
  auto profile = hello.initProfile();
  hello.setActiveModel(slots_.active());
  hello.setCrashesSinceActivation(slots_.crashes_since_activation());
  profile.setArch(hardware.arch);
  auto features = profile.initIsaFeatures(static_cast<unsigned>(hardware.isa_features.size()));
  for (size_t i = 0; i < hardware.isa_features.size(); ++i) features.set(static_cast<unsigned>(i), hardware.isa_features[i]);
  profile.setCores(hardware.cores);
  profile.setRamBytes(hardware.ram_bytes);
  profile.setVersion(hardware.version);
  auto labels = profile.initLabels(static_cast<unsigned>(hardware.labels.size()));
  for (size_t i = 0; i < hardware.labels.size(); ++i) labels.set(static_cast<unsigned>(i), hardware.labels[i]);
  send(message);
  last_hello_ms_ = now_ms();
}

int Agent::run(const std::atomic<bool>& stop) {
  last_heard_ms_ = now_ms();
  send_hello();
  while (!stop && exit_code_ < 0) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (!poll_interruptible(&item, 1, std::chrono::milliseconds(50))) continue;
    while (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) {
      zmq::message_t tag, payload;
      if (!socket_.recv(tag, zmq::recv_flags::dontwait)) break;
      if (!tag.more()) continue;
      (void)socket_.recv(payload);
      while (payload.more()) (void)socket_.recv(payload);  // extra frames: not ours
      if (tag.to_string_view() != kFrameTag) continue;
      last_heard_ms_ = now_ms();
      try {
        DecodedEnvelope decoded = decode_envelope(std::span(static_cast<const std::byte*>(payload.data()), payload.size()));
        reading_message([&] { handle(decoded.envelope()); });
      } catch (const std::exception& error) {
        // Reported back too (e.g. a disk-full download), so the operator sees it in the audit log.
        log(std::string("message from the coordinator refused: ") + error.what());
        OutgoingMessage message;
        auto reply = message.body().initError();
        reply.setCode(wire::ErrorReply::Code::INTERNAL);
        reply.setMessage(std::string(error.what()).substr(0, 1000));
        send(message);
      }
    }
    const int64_t now = now_ms();
    if (now - last_heard_ms_ > config_.coordinator_timeout_ms && welcomed_) {
      log("no word from the coordinator: reconnecting");
      welcomed_ = false;
    }
    if (!welcomed_ && now - last_hello_ms_ > std::max(1000, heartbeat_interval_ms_)) send_hello();
    if (welcomed_ && now - last_heartbeat_ms_ >= heartbeat_interval_ms_) {
      OutgoingMessage message;
      message.body().initHeartbeat().setBusy(busy_);
      send(message);
      last_heartbeat_ms_ = now;
    }
    try {
      advance_activation();
    } catch (const std::exception& error) {
      log(fmt::format("rollout {}: {}", activation_ ? activation_->rollout : 0, error.what()));
      if (activation_) send_activation_report(activation_->rollout, false, false, error.what(), nullptr);
      activation_.reset();
    }
    try {
      advance();
    } catch (const std::exception& error) {
      log(fmt::format("round {}: {}; leaving the round", round_ ? round_->params.id : 0, error.what()));
      retire_round();
    }
  }
  slots_.record_clean_exit();
  return exit_code_ < 0 ? 0 : exit_code_;
}

void Agent::handle(wire::Envelope::Reader envelope) {
  const auto body = envelope.getBody();
  switch (body.which()) {
    case Body::WELCOME: {
      const auto welcome = body.getWelcome();
      const auto key = welcome.getSigningKey();
      if (SigningKey::from_public_bytes(std::span(key.begin(), key.size())).public_key_hex() != enrollment_.signing_public_key) {
        log("the coordinator presents a different signing key than at enrollment; its packages will be refused");
      }
      heartbeat_interval_ms_ = static_cast<int>(std::clamp<uint32_t>(welcome.getHeartbeatIntervalMs(), 100, 600000));
      if (!welcomed_) log(fmt::format("connected as agent {}", welcome.getAgentId()));
      welcomed_ = true;
      return;
    }
    case Body::HEARTBEAT:
      return;
    case Body::ERROR: {
      const auto error = body.getError();
      log(fmt::format("coordinator error: {}", error.getMessage().cStr()));
      if (error.getCode() == wire::ErrorReply::Code::NOT_ENROLLED) {
        log("the coordinator does not accept this agent (not enrolled or revoked); stopping");
        exit_code_ = kExitRefused;
      }
      return;
    }
    case Body::ROUND_ANNOUNCE:
      on_announce(body.getRoundAnnounce().getConfig());
      return;
    case Body::CHUNK:
      on_chunk(body.getChunk());
      return;
    case Body::ROUND_KEYS:
      on_round_keys(body.getRoundKeys());
      return;
    case Body::SHARES_FOR_YOU:
      on_shares(body.getSharesForYou());
      return;
    case Body::UNMASK_REQUEST:
      on_unmask(body.getUnmaskRequest());
      return;
    case Body::ROUND_RESULT:
      on_result(body.getRoundResult());
      return;
    case Body::MODEL_ACTIVATE:
      on_activate(body.getModelActivate());
      return;
    case Body::MODEL_ROLLBACK:
      on_rollback(body.getModelRollback());
      return;
    case Body::ROUND_ABORT: {
      const auto abort = body.getRoundAbort();
      if (round_ && round_->params.id == abort.getRoundId()) {
        log(fmt::format("round {} aborted by the coordinator: {}", abort.getRoundId(), abort.getReason().cStr()));
        retire_round();
      }
      return;
    }
    default:
      log(fmt::format("ignoring '{}' from the coordinator", body_name(envelope)));
  }
}

void Agent::on_announce(wire::RoundConfig::Reader config) {
  if (round_ && round_->params.id == config.getRoundId()) return;  // announced again (e.g. after a reconnect)
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
  if (params.sequences == 0 || params.sequences > 1000000 || params.seq_len < 2 || params.seq_len > 65536 ||
      params.model_bytes == 0 || params.model_bytes > (uint64_t{1} << 40) || !(params.dp_noise_stddev >= 0) ||
      params.min_survivors < 2) {
    fail("roundAnnounce: a field is out of range");
  }
  HistogramLayout layout{params.mantissa_bits, params.min_exponent, params.max_exponent};
  layout.validate();
  auto work = std::make_unique<RoundWork>();
  work->params = params;
  work->model =
      std::make_unique<Download>(params.model_sha256, params.model_bytes, config_.downloads_dir(), config_.models_dir());
  round_ = std::move(work);
  busy_ = true;
  log(fmt::format("round {}: {} sequences x {} tokens on model {}", params.id, params.sequences, params.seq_len,
                  params.model_sha256.substr(0, 16)));
  last_chunk_request_ms_ = 0;
}

void Agent::request_chunks() {
  auto request = [&](Download& download) {
    if (download.complete() || now_ms() - last_chunk_request_ms_ < kChunkRetryMs) return;
    OutgoingMessage message;
    auto chunk = message.body().initChunkRequest();
    chunk.setSha256(download.sha256());
    chunk.setOffset(download.have());
    chunk.setLength(kChunkRequestBytes);
    send(message);
    last_chunk_request_ms_ = now_ms();
  };
  if (round_->phase == Phase::kDownloading) request(*round_->model);
  if (round_->phase == Phase::kFetchingResults) {
    for (auto& [label, download] : round_->results) {
      if (!download->complete()) {
        request(*download);
        return;
      }
    }
  }
}

void Agent::on_chunk(wire::Chunk::Reader chunk) {
  const std::string sha = chunk.getSha256().cStr();
  const auto data = chunk.getData();
  std::vector<Download*> downloads;
  if (activation_ && activation_->download) downloads.push_back(activation_->download.get());
  if (round_) {
    downloads.push_back(round_->model.get());
    for (auto& [label, download] : round_->results) downloads.push_back(download.get());
  }
  for (Download* download : downloads) {
    if (download->sha256() != sha || download->complete()) continue;
    if (activation_ && download == activation_->download.get()) {
      try {
        download->accept(chunk.getOffset(), std::span(data.begin(), data.size()), chunk.getTotalBytes());
      } catch (const Error& error) {
        // A package that does not hash to its name is refused: the rollout hears why; nothing switches.
        log(fmt::format("rollout {}: refused: {}", activation_->rollout, error.what()));
        send_activation_report(activation_->rollout, false, false, error.what(), nullptr);
        activation_.reset();
        return;
      }
    } else {
      download->accept(chunk.getOffset(), std::span(data.begin(), data.size()), chunk.getTotalBytes());
    }
    last_chunk_request_ms_ = 0;  // ask for the next chunk right away
    if (activation_) activation_->last_request_ms = 0;
    if (download->complete()) log(fmt::format("downloaded and verified {} ({} bytes)", sha.substr(0, 16), download->total()));
    return;
  }
}

void Agent::advance() {
  if (!round_) return;
  RoundWork& work = *round_;
  if (work.phase == Phase::kDownloading) {
    if (!work.model->complete()) {
      request_chunks();
      return;
    }
    const RoundParams params = work.params;
    const std::string package = work.model->path();
    HistogramLayout layout{params.mantissa_bits, params.min_exponent, params.max_exponent};
    work.statistics = std::async(std::launch::async, [this, package, params, layout] {
      return compute_statistics(package, coordinator_signing_key_, config_, params.sequences, params.seq_len, layout,
                                params.dp_noise_stddev);
    });
    work.phase = Phase::kCalibrating;
    return;
  }
  if (work.phase == Phase::kCalibrating && work.statistics.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    work.input = work.statistics.get();
    work.secagg = std::make_unique<SecAggClient>();
    const AdvertisedKeys keys = work.secagg->advertise();
    OutgoingMessage message;
    auto join = message.body().initJoin();
    join.setRoundId(work.params.id);
    join.setCipherPublic(as_data(keys.cipher_public));
    join.setMaskPublic(as_data(keys.mask_public));
    join.setVectorLength(work.input.size());
    join.setNarrowLanes(true);
    send(message);
    inject_fault("exit-after-join");
    work.phase = Phase::kJoined;
    log(fmt::format("round {}: statistics ready ({} sequences, {} tokens); joined", work.params.id,
                    work.input[work.input.size() - 2], work.input.back()));
    return;
  }
  if (work.phase == Phase::kFetchingResults) {
    for (auto& [label, download] : work.results) {
      if (!download->complete()) {
        request_chunks();
        return;
      }
    }
    const std::string fp32 = work.model->path();
    std::vector<std::pair<std::string, std::string>> packages;
    for (auto& [label, download] : work.results) packages.emplace_back(label, download->path());
    LocalCheckOptions options;
    options.threads = config_.threads > 0 ? config_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    options.max_tokens = config_.eval_max_tokens;
    options.decode_tokens = config_.decode_tokens;
    work.checks = std::async(std::launch::async, [this, fp32, packages, options] {
      const PrivateText text = read_private_text(config_.data_dir, config_.heldout_fraction);
      std::vector<LocalCheck> checks;
      for (const auto& [label, path] : packages) {
        checks.push_back(check_package(label, fp32, path, coordinator_signing_key_,
                                       text.heldout.empty() ? text.calibration : text.heldout, options));
      }
      return checks;
    });
    work.phase = Phase::kChecking;
    busy_ = true;
    return;
  }
  if (work.phase == Phase::kChecking && work.checks.wait_for(std::chrono::seconds(0)) == std::future_status::ready) {
    OutgoingMessage message;
    auto report = message.body().initLocalReport();
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
        log(fmt::format("round {}: {} model: KL {:.5f}, top-1 {:.2f}%, {:.1f} vs {:.1f} tokens/s", work.params.id,
                        checks[i].label, checks[i].mean_kl, 100 * checks[i].top1_agreement, checks[i].decode_tokens_per_second,
                        checks[i].reference_decode_tokens_per_second));
      }
    } catch (const std::exception& error) {
      report.setError(error.what());
      log(fmt::format("round {}: local check failed: {}", work.params.id, error.what()));
    }
    send(message);
    work.phase = Phase::kReported;
    busy_ = false;
  }
}

void Agent::on_round_keys(wire::RoundKeys::Reader keys) {
  if (!round_ || round_->params.id != keys.getRoundId() || round_->phase != Phase::kJoined) {
    fail("roundKeys for round {} not expected now", keys.getRoundId());
  }
  const SecAggConfig config = read_round_keys_config(keys, round_->params.min_survivors);
  if (config.vector_length != round_->input.size()) fail("roundKeys: vector length {} differs from ours", config.vector_length);
  const std::map<uint32_t, AdvertisedKeys> neighbours = read_round_keys_neighbours(keys);
  const auto shares = round_->secagg->share_keys(config, keys.getIndex(), neighbours);
  OutgoingMessage message;
  auto out = message.body().initShareKeys();
  out.setRoundId(config.round_id);
  write_encrypted_shares(shares, out.initShares(static_cast<unsigned>(shares.size())));
  send(message);
  inject_fault("exit-after-shares");
  round_->phase = Phase::kShared;
}

void Agent::on_shares(wire::SharesForYou::Reader delivery) {
  if (!round_ || round_->params.id != delivery.getRoundId() || round_->phase != Phase::kShared) {
    fail("sharesForYou for round {} not expected now", delivery.getRoundId());
  }
  const std::vector<uint64_t> masked =
      round_->secagg->mask_input(round_->input, read_encrypted_shares(delivery.getShares(), "sharesForYou"));
  OutgoingMessage message;
  auto out = message.body().initMaskedInput();
  out.setRoundId(delivery.getRoundId());
  const uint32_t lane_bits = round_->secagg->config().lane_bits;
  write_lane_vector(masked, lane_bits, out.initValues(static_cast<unsigned>(masked.size() * lane_bits / 8)));
  send(message);
  inject_fault("exit-after-masked-input");
  round_->input.clear();  // only the masked vector ever left; the plain one is not kept
  round_->phase = Phase::kMasked;
}

void Agent::on_unmask(wire::UnmaskRequest::Reader request) {
  if (!round_ || round_->params.id != request.getRoundId() || round_->phase != Phase::kMasked) {
    fail("unmaskRequest for round {} not expected now", request.getRoundId());
  }
  if (request.getSurvivors().size() > 100000) fail("unmaskRequest: {} survivors", request.getSurvivors().size());
  std::vector<uint32_t> survivors;
  for (const uint32_t survivor : request.getSurvivors()) survivors.push_back(survivor);
  const auto revealed = round_->secagg->unmask(survivors);
  OutgoingMessage message;
  auto out = message.body().initUnmaskShares();
  out.setRoundId(request.getRoundId());
  write_revealed_shares(revealed, out.initShares(static_cast<unsigned>(revealed.size())));
  send(message);
  round_->secagg.reset();  // nothing more to reveal, ever
  round_->phase = Phase::kRevealed;
}

void Agent::on_result(wire::RoundResult::Reader result) {
  if (!round_ || round_->params.id != result.getRoundId())
    fail("roundResult for round {}, which this agent did not take part in", result.getRoundId());
  if (round_->phase == Phase::kFetchingResults || round_->phase == Phase::kChecking) return;  // already on it
  if (result.getModels().size() > 8) fail("roundResult: {} models", result.getModels().size());
  round_->results.clear();
  for (const auto model : result.getModels()) {
    round_->results.emplace_back(
        model.getLabel().cStr(),
        std::make_unique<Download>(model.getSha256().cStr(), model.getBytes(), config_.downloads_dir(), config_.models_dir()));
  }
  round_->phase = Phase::kFetchingResults;
  last_chunk_request_ms_ = 0;
  busy_ = true;
}

}  // namespace fedcal::edge_agent

namespace fedcal::edge_agent {

void Agent::request_chunk(Download& download, int64_t& last_request_ms) {
  if (download.complete() || now_ms() - last_request_ms < kChunkRetryMs) return;
  OutgoingMessage message;
  auto chunk = message.body().initChunkRequest();
  chunk.setSha256(download.sha256());
  chunk.setOffset(download.have());
  chunk.setLength(kChunkRequestBytes);
  send(message);
  last_request_ms = now_ms();
}

void Agent::on_activate(wire::ModelActivate::Reader activate) {
  const std::string sha = activate.getSha256().cStr();
  if (activation_ && activation_->download && activation_->download->sha256() == sha) return;  // already on it
  if (sha == slots_.active()) {
    LocalCheck unchanged;
    send_activation_report(activate.getRolloutId(), true, false, "", &unchanged);
    return;
  }
  if (activation_ && activation_->check.valid()) activation_->check.wait();
  activation_ = std::make_unique<Activation>();
  activation_->rollout = activate.getRolloutId();
  activation_->download = std::make_unique<Download>(sha, activate.getBytes(), config_.downloads_dir(), config_.models_dir());
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
      request_chunk(*activation.download, activation.last_request_ms);
      return;
    }
    // Verify the signature and self-test before switching: against the active model on our
    // held-out text if there is one, else load and decode.
    const std::string candidate = activation.download->path();
    const std::string previous = slots_.active().empty() ? "" : slots_.path(slots_.active());
    LocalCheckOptions options;
    options.threads = config_.threads > 0 ? config_.threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    options.max_tokens = config_.eval_max_tokens;
    options.decode_tokens = config_.decode_tokens;
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
  const bool switched = slots_.rollback();
  {
    std::lock_guard lock(active_path_mutex_);
    std::filesystem::create_directories(config_.state_dir);
    slots_.record_start();
    if (slots_.crashes_since_activation() > 0) {
      log(fmt::format("{} unclean exits since the active model was activated", slots_.crashes_since_activation()));
    }
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
  }
  send(message);
}

}  // namespace fedcal::edge_agent
