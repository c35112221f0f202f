#include "edge_agent/agent.h"

#include <signal.h>
#include <unistd.h>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <thread>

#include "common/error.h"
#include "common/log_line.h"
#include "common/systemd_notify.h"
#include "common/text.h"
#include "edge_agent/hardware_profile.h"
#include "edge_agent/private_text.h"

namespace fedcal::edge_agent {
namespace {

using Body = wire::Envelope::Body;

// The package url a welcome gives: used if it is an http:// url ending in / of sane length.
std::string read_package_url(const std::string& url) {
  if (url.empty() || url.size() > 2000 || url.rfind("http://", 0) != 0 || url.back() != '/') return "";
  for (const char c : url) {
    if (static_cast<unsigned char>(c) <= ' ' || c == 0x7f) return "";
  }
  return url;
}

uint64_t wall_clock_us() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::system_clock::now().time_since_epoch()).count());
}

constexpr uint32_t kChunkRequestBytes = 1 << 20;
constexpr uint64_t kHttpRangeBytes = 4 << 20;  // per HTTP request (a cache serves ranges of its copy)
constexpr int kHttpTimeoutMs = 60000;          // per step of a request: a cache may be filling from the origin

// What kind of problem made the agent leave a round, from the error it hit.
wire::RoundLeave::Cause leave_cause(const std::exception& error) {
  using Cause = wire::RoundLeave::Cause;
  if (dynamic_cast<const std::bad_alloc*>(&error)) return Cause::OUT_OF_MEMORY;
  const std::string_view what = error.what();
  if (what.find("No space left") != std::string_view::npos || what.find("Disk quota") != std::string_view::npos ||
      what.find("disk full") != std::string_view::npos)
    return Cause::DISK_FULL;
  if (what.find("private text") != std::string_view::npos || what.find("no text (") != std::string_view::npos)
    return Cause::NO_PRIVATE_TEXT;
  if (what.find("loading model") != std::string_view::npos || what.find("signature") != std::string_view::npos)
    return Cause::MODEL_DOES_NOT_LOAD;
  return Cause::OTHER;
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
      monitor_(context_, zmq::socket_type::pair),
      next_sequence_(wall_clock_us()),
      slots_(config_.state_dir) {
  SocketLimits limits;
  limits.reconnect_interval_max_ms = config_.reconnect_interval_max_ms;
  limits.heartbeat_ttl = config_.transport_ttl;
  limits.heartbeat_interval_ms = config_.transport_ping_ms;
  limits.heartbeat_timeout_ms = config_.transport_timeout_ms();
  configure_curve_client(socket_, keys_, config_.coordinator_key, limits);
  if (zmq_socket_monitor(socket_.handle(), "inproc://fedcal-agent-monitor", ZMQ_EVENT_HANDSHAKE_SUCCEEDED) != 0)
    fail("cannot monitor the coordinator connection: {}", zmq_strerror(zmq_errno()));
  monitor_.set(zmq::sockopt::linger, 0);
  monitor_.connect("inproc://fedcal-agent-monitor");
  endpoints_.push_back(config_.coordinator);
  endpoints_.insert(endpoints_.end(), config_.standby_coordinators.begin(), config_.standby_coordinators.end());
  socket_.connect(config_.coordinator);
  endpoint_since_ms_ = steady_ms();
  log(fmt::format("agent {} ({}) connecting to {}", enrollment_.agent_id, config_.name, config_.coordinator));
  std::filesystem::create_directories(config_.state_dir);
  if (const int removed = remove_stale_partial_downloads(config_.downloads_dir(), config_.partial_download_max_age_hours))
    log(fmt::format("removed {} partial download(s) older than {} h", removed, config_.partial_download_max_age_hours));
  if (!slots_.recovery().empty()) write_log(LogLevel::kWarning, "agent " + config_.name, slots_.recovery());
  slots_.record_start();
  if (slots_.crashes_since_activation() > 0) {
    log(fmt::format("{} unclean exits since the active model was activated", slots_.crashes_since_activation()));
  }
  active_path_ = slots_.active().empty() ? "" : slots_.path(slots_.active());
  check_active_package();
  raise_file_limit();  // local connections beyond the serving socket's limit are cut, not fatal
  local_server_ = std::make_unique<LocalServer>(config_.serve_access_path(), config_.serve_port, coordinator_signing_key_,
                                                config_.threads, [this] {
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

void Agent::leave_round(uint64_t round_id, wire::RoundLeave::Cause cause, const std::string& reason) {
  log(fmt::format("round {}: leaving ({}): {}", round_id, cause_name(cause), reason));
  OutgoingMessage message;
  auto leave = message.body().initRoundLeave();
  leave.setRoundId(round_id);
  leave.setCause(cause);
  leave.setReason(reason.substr(0, 1000));
  send(message);
  if (round_ && round_->params.id == round_id) retire_round();
}

void Agent::make_room_for(const Download& download) {
  if (download.complete()) return;
  std::set<std::string> keep = {slots_.active(), slots_.previous(), download.sha256()};
  if (activation_ && activation_->reference) keep.insert(activation_->reference->sha256());
  if (round_) {
    keep.insert(round_->params.model_sha256);
    for (const auto& [label, result] : round_->results) keep.insert(result->sha256());
  }
  const uint64_t budget = static_cast<uint64_t>(config_.disk_budget_mb) << 20;
  for (const std::string& removed :
       make_room(config_.downloads_dir(), config_.models_dir(), download.total() - download.have(), budget, keep)) {
    log("removed " + removed + " to stay within the disk budget");
  }
}

void Agent::log(const std::string& line) const { write_log(LogLevel::kInfo, "agent " + config_.name, line); }

void Agent::send(OutgoingMessage& message) {
  const std::vector<std::byte> bytes = message.encode(++next_sequence_);
  socket_.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore);
  socket_.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::none);
}

void Agent::send_answer(std::unique_ptr<OutgoingMessage> message, const char* kind) {
  send(*message);
  round_->answer = std::move(message);
  round_->answer_kind = kind;
  round_->answer_acked = false;
  round_->answer_retry.done(steady_ms());
}

void Agent::resend_answer(const std::string& why) {
  if (!round_ || !round_->answer) return;
  log(fmt::format("round {}: sending '{}' again ({})", round_->params.id, round_->answer_kind, why));
  send(*round_->answer);  // a fresh sequence number: not a replay
  round_->answer_retry.done(steady_ms());
}

void Agent::resend_unacknowledged(int64_t now_ms) {
  if (!coordinator_acks_ || !round_ || !round_->answer || round_->answer_acked || !round_->answer_retry.due(now_ms)) return;
  resend_answer(fmt::format("not acknowledged within {} ms", kRoundResendMs));
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
  const std::string problem = private_text_problem(config_.data_dir);
  if (!problem.empty()) log("cannot take part in rounds: " + problem);
  hello.setUnavailable(problem);
  hello.setRoundId(round_ ? round_->params.id : 0);
  hello.setResendsRoundMessages(true);
  profile.setArch(hardware.arch);
  auto features = profile.initIsaFeatures(static_cast<unsigned>(hardware.isa_features.size()));
  for (size_t i = 0; i < hardware.isa_features.size(); ++i) features.set(static_cast<unsigned>(i), hardware.isa_features[i]);
  profile.setCores(hardware.cores);
  profile.setRamBytes(hardware.ram_bytes);
  profile.setVersion(hardware.version);
  auto labels = profile.initLabels(static_cast<unsigned>(hardware.labels.size()));
  for (size_t i = 0; i < hardware.labels.size(); ++i) labels.set(static_cast<unsigned>(i), hardware.labels[i]);
  send(message);
  hello_retry_.sent(steady_ms());
}

int Agent::run(const std::atomic<bool>& stop) {
  last_heard_ms_ = steady_ms();
  send_hello();
  SystemdNotifier systemd;
  systemd.ready();  // enrolled, keys read, local server listening (the constructor)
  while (!stop && exit_code_ < 0) {
    systemd.keep_alive(steady_ms());
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    if (!poll_interruptible(&item, 1, std::chrono::milliseconds(50))) continue;
    while (socket_.get(zmq::sockopt::events) & ZMQ_POLLIN) {
      zmq::message_t tag, payload;
      if (!socket_.recv(tag, zmq::recv_flags::dontwait)) break;
      if (!tag.more()) continue;
      (void)socket_.recv(payload);
      while (payload.more()) (void)socket_.recv(payload);  // extra frames: not ours
      if (tag.to_string_view() != kFrameTag) continue;
      last_heard_ms_ = steady_ms();
      receive(std::span(static_cast<const std::byte*>(payload.data()), payload.size()));
    }
    bool connected = false;
    for (zmq::message_t event; monitor_.recv(event, zmq::recv_flags::dontwait);) {
      zmq::message_t address;
      if (event.more()) (void)monitor_.recv(address);
      connected = true;  // the only event asked for: a handshake completed
    }
    // A new connection while a hello waits for its welcome: the welcome may have gone to the old one
    // (the coordinator paused past the transport's heartbeat: measured, an agent's backed-off retries
    // then came after the round's grace and its report was missing).
    if (connected && !welcomed_) hello_retry_.trigger();
    const int64_t now = steady_ms();
    if (now - last_heard_ms_ > config_.coordinator_timeout_ms && welcomed_) {
      log("no word from the coordinator: reconnecting");
      welcomed_ = false;
      hello_retry_.lost(now);
    }
    // Not welcomed for coordinator_timeout_ms by this endpoint: the next one (a standby leads now).
    if (!welcomed_ && endpoints_.size() > 1 &&
        now - std::max(last_heard_ms_, endpoint_since_ms_) > config_.coordinator_timeout_ms) {
      socket_.disconnect(endpoints_[endpoint_]);
      const std::string& previous = endpoints_[endpoint_];
      endpoint_ = (endpoint_ + 1) % endpoints_.size();
      log(fmt::format("no answer from {}: trying {}", previous, endpoints_[endpoint_]));
      socket_.connect(endpoints_[endpoint_]);
      endpoint_since_ms_ = now;
      hello_retry_.lost(now);
    }
    if (!welcomed_ && hello_retry_.due(now)) send_hello();
    if (welcomed_ && heartbeat_.due(now)) {
      OutgoingMessage message;
      message.body().initHeartbeat().setBusy(busy_);
      send(message);
      heartbeat_.done(now);
    }
    if (welcomed_ && !damage_to_report_.empty()) {
      std::vector<std::string> found;
      found.swap(damage_to_report_);
      for (const std::string& what : found) report_damaged(what);
    }
    poll_package_fetch();
    advance_repair();
    if (welcomed_) resend_unacknowledged(now);
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
      if (round_) leave_round(round_->params.id, leave_cause(error), error.what());
    }
  }
  systemd.stopping();
  if (round_ && round_->phase != Phase::kReported) leave_round(round_->params.id, wire::RoundLeave::Cause::SHUTTING_DOWN, "the agent is stopping");
  slots_.record_clean_exit();
  return exit_code_ < 0 ? 0 : exit_code_;
}

void Agent::receive(std::span<const std::byte> payload) {
  try {
    DecodedEnvelope decoded = decode_envelope(payload);
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

void Agent::handle(wire::Envelope::Reader envelope) {
  const auto body = envelope.getBody();
  switch (body.which()) {
    case Body::WELCOME: {
      const auto welcome = body.getWelcome();
      const auto key = welcome.getSigningKey();
      if (SigningKey::from_public_bytes(std::span(key.begin(), key.size())).public_key_hex() != enrollment_.signing_public_key) {
        log("the coordinator presents a different signing key than at enrollment; its packages will be refused");
      }
      const int64_t period = std::clamp<uint32_t>(welcome.getHeartbeatIntervalMs(), 100, 600000);
      heartbeat_.set_period(period);
      hello_retry_.set_base(std::max<int64_t>(1000, period));
      hello_retry_.answered();
      if (!welcomed_) {
        log(fmt::format("connected as agent {}", welcome.getAgentId()));
        // A new connection: what was in flight on the old one may be lost. The round's answer goes
        // again now (the coordinator treats a copy it has as a duplicate).
        if (round_ && round_->answer && !round_->answer_acked) round_->answer_retry.trigger();
      }
      coordinator_acks_ = welcome.getAcksRoundMessages();
      package_url_ = !config_.package_url.empty() ? config_.package_url : read_package_url(welcome.getPackageUrl().cStr());
      welcomed_ = true;
      return;
    }
    case Body::HEARTBEAT:
      return;
    case Body::ROUND_ACK: {
      const auto ack = body.getRoundAck();
      if (round_ && round_->params.id == ack.getRoundId() && round_->answer && round_->answer_kind == ack.getReceived().cStr())
        round_->answer_acked = true;
      return;
    }
    case Body::ERROR: {
      const auto error = body.getError();
      log(fmt::format("coordinator error: {}", error.getMessage().cStr()));
      if (error.getCode() == wire::ErrorReply::Code::REPLAYED && error.getNextSequence() > next_sequence_) {
        // Our counter fell behind what the coordinator accepted (a clock step back, a restored state):
        // continue from the number it gives, and say hello again (the refused message is lost).
        log(fmt::format("continuing at message number {} as the coordinator asks", error.getNextSequence()));
        next_sequence_ = error.getNextSequence() - 1;
        welcomed_ = false;
        hello_retry_.trigger();
      }
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
    case Body::SHARE_OPEN_REQUEST:
      on_open_share(body.getShareOpenRequest());
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

void Agent::on_chunk(wire::Chunk::Reader chunk) {
  const auto data = chunk.getData();
  accept_chunk(chunk.getSha256().cStr(), chunk.getOffset(), std::span(data.begin(), data.size()), chunk.getTotalBytes());
}

void Agent::accept_chunk(const std::string& sha, uint64_t offset, std::span<const uint8_t> data, uint64_t total) {
  std::vector<Download*> downloads;
  if (activation_ && activation_->download) downloads.push_back(activation_->download.get());
  if (activation_ && activation_->reference) downloads.push_back(activation_->reference.get());
  if (repair_) downloads.push_back(repair_.get());
  if (round_) {
    downloads.push_back(round_->model.get());
    for (auto& [label, download] : round_->results) downloads.push_back(download.get());
  }
  for (Download* download : downloads) {
    if (download->sha256() != sha || download->complete()) continue;
    if (download == repair_.get()) {
      // Its size was taken from the damaged copy (a torn write shortens it): the coordinator's counts.
      if (total != repair_->total()) {
        repair_ = std::make_unique<Download>(sha, total, config_.downloads_dir(), config_.models_dir());
        if (offset != 0) return;  // the next request starts at 0
      }
      try {
        repair_->accept(offset, data, total);
        repair_retry_.trigger();  // the next chunk right away (was: one per retry interval, 18 s for 7 MB)
      } catch (const Error& error) {
        report_damaged(fmt::format("the active package {} could not be repaired: {}", sha.substr(0, 16), error.what()));
        repair_.reset();
      }
      return;
    } else if (activation_ && (download == activation_->download.get() || download == activation_->reference.get())) {
      try {
        download->accept(offset, data, total);
      } catch (const Error& error) {
        // A package that does not hash to its name is refused: the rollout hears why; nothing switches.
        log(fmt::format("rollout {}: refused: {}", activation_->rollout, error.what()));
        send_activation_report(activation_->rollout, false, false, error.what(), nullptr);
        activation_.reset();
        return;
      }
    } else {
      try {
        download->accept(offset, data, total);
      } catch (const std::exception& error) {
        // A round's download that cannot be stored (disk full) or does not verify: the round is told
        // at once and the partial file goes, so the space is free for the next try.
        const uint64_t id = round_->params.id;
        download->discard();
        leave_round(id, leave_cause(error), error.what());
        return;
      }
    }
    chunk_retry_.trigger();  // ask for the next chunk right away
    if (activation_) activation_->chunk_retry.trigger();
    if (download->complete()) log(fmt::format("downloaded and verified {} ({} bytes)", sha.substr(0, 16), download->total()));
    return;
  }
}

std::unique_ptr<Download> Agent::open_download(const std::string& sha256, uint64_t bytes) {
  auto download = std::make_unique<Download>(sha256, bytes, config_.downloads_dir(), config_.models_dir());
  if (!download->damaged().empty()) report_damaged(download->damaged());
  return download;
}

void Agent::report_damaged(const std::string& what) {
  write_log(LogLevel::kWarning, "agent " + config_.name, what);
  if (!welcomed_) {
    damage_to_report_.push_back(what);  // said once the coordinator answers
    return;
  }
  OutgoingMessage message;
  auto reply = message.body().initError();
  reply.setCode(wire::ErrorReply::Code::DAMAGED);
  reply.setMessage(what.substr(0, 1000));
  send(message);
}

void Agent::check_active_package() {
  const std::string active = slots_.active();
  if (active.empty()) return;
  std::error_code error;
  const auto bytes = std::filesystem::file_size(slots_.path(active), error);
  if (error) {
    report_damaged(
        fmt::format("the active package {} is missing from this device ({}); serving is unavailable until a "
                    "rollout brings a model",
                    active.substr(0, 16), slots_.path(active)));
    return;
  }
  auto check = open_download(active, bytes);
  if (!check->complete()) repair_ = std::move(check);  // damaged: fetched again from the coordinator
}

void Agent::advance_repair() {
  if (!repair_ || !welcomed_) return;
  if (repair_->complete()) {
    log(fmt::format("repaired the active package {}: downloaded again and verified", repair_->sha256().substr(0, 16)));
    repair_.reset();
    return;
  }
  request_chunk(*repair_, repair_retry_);
}

void Agent::request_chunk(Download& download, Interval& retry) {
  const int64_t now = steady_ms();
  if (download.complete()) return;
  if (fetch_over_http(download)) return;
  if (!retry.due(now)) return;
  OutgoingMessage message;
  auto chunk = message.body().initChunkRequest();
  chunk.setSha256(download.sha256());
  chunk.setOffset(download.have());
  chunk.setLength(kChunkRequestBytes);
  send(message);
  retry.done(now);
}

bool Agent::fetch_over_http(Download& download) {
  if (package_url_.empty() || http_failed_.count(download.sha256())) return false;
  if (package_fetch_) return true;  // one range at a time; its result comes through poll_package_fetch
  PackageFetch fetch{download.sha256(), package_url_ + download.sha256() + ".fcpkg", {}};
  fetch.range = std::async(std::launch::async, [url = fetch.url, offset = download.have()] {
    return fetch_range(url, offset, kHttpRangeBytes, kHttpTimeoutMs);
  });
  package_fetch_ = std::move(fetch);
  return true;
}

void Agent::poll_package_fetch() {
  if (!package_fetch_ || package_fetch_->range.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  PackageFetch fetch = std::move(*package_fetch_);
  package_fetch_.reset();
  try {
    const FetchedRange range = fetch.range.get();
    accept_chunk(fetch.sha256, range.offset, range.data, range.total);
  } catch (const std::exception& error) {
    // The cache or origin is down, lacks the package or answers nonsense: the coordinator has it.
    log(fmt::format("package {} over HTTP failed ({}); fetching it from the coordinator", fetch.sha256.substr(0, 16),
                    error.what()));
    http_failed_.insert(fetch.sha256);
  }
  chunk_retry_.trigger();
  repair_retry_.trigger();
  if (activation_) activation_->chunk_retry.trigger();
}

}  // namespace fedcal::edge_agent
