#include "coordinator/server.h"

#include <sys/stat.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <stdexcept>

#include "common/clock.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/log_line.h"
#include "common/systemd_notify.h"
#include "common/text.h"
#include "coordinator/artifact_store.h"
#include "coordinator/database_guard.h"
#include "protocol/relay_frames.h"

namespace fedcal::coordinator {
namespace {
namespace fs = std::filesystem;
using Body = wire::Envelope::Body;

// Limits of a hello's hardware profile: what a real device sends is far below them.
constexpr size_t kMaxProfileListEntries = 256;  // ISA features, labels
constexpr size_t kMaxProfileTextBytes = 64;     // each name

nlohmann::json profile_json(wire::HardwareProfile::Reader profile) {
  if (profile.getIsaFeatures().size() > kMaxProfileListEntries || profile.getLabels().size() > kMaxProfileListEntries) {
    fail("hello: a profile of {} ISA features and {} labels (at most {} each)", profile.getIsaFeatures().size(),
         profile.getLabels().size(), kMaxProfileListEntries);
  }
  nlohmann::json features = nlohmann::json::array();
  for (const auto feature : profile.getIsaFeatures()) features.push_back(read_text(feature, kMaxProfileTextBytes));
  nlohmann::json labels = nlohmann::json::array();
  for (const auto label : profile.getLabels()) labels.push_back(read_text(label, kMaxProfileTextBytes));
  return {{"arch", read_text(profile.getArch(), kMaxProfileTextBytes)},
          {"isa_features", features},
          {"cores", profile.getCores()},
          {"ram_bytes", profile.getRamBytes()},
          {"version", read_text(profile.getVersion(), kMaxProfileTextBytes)},
          {"labels", labels}};
}

}  // namespace

Server::Server(CoordinatorConfig config, std::unique_ptr<SqlConnection> database)
    : config_(std::move(config)),
      state_lock_(config_.state_dir, "fedcal-coordinator serve"),
      store_((check_database_before_open(config_, config_.allow_new_database), fs::create_directories(config_.artifacts_dir()),
              database ? std::move(database) : open_database(config_)),
             config_.ledger_path()),
      curve_keys_(CurveKeyPair::read_or_create(config_.curve_key_path())),
      signing_key_([&] {
        if (!fs::exists(config_.signing_key_path())) {
          SigningKey key = SigningKey::generate();
          key.write_private_key(config_.signing_key_path());
          key.write_public_key(config_.signing_key_path() + ".pub");
        }
        return SigningKey::read_private_key(config_.signing_key_path());
      }()),
      context_(1),
      agents_(context_, zmq::socket_type::router),
      zap_(context_, zmq::socket_type::rep),
      admin_(context_, zmq::socket_type::rep),
      refusals_by_key_(static_cast<uint32_t>(config_.refusals_per_window), config_.rate_window_ms),
      refusals_by_address_(static_cast<uint32_t>(config_.refusals_per_window), config_.rate_window_ms),
      error_reports_by_key_(static_cast<uint32_t>(config_.refusals_per_window), config_.rate_window_ms),
      next_sequence_(static_cast<uint64_t>(now_ms()) * 1000) {
  register_admin_commands();
  ::chmod(config_.state_dir.c_str(), 0700);
  zap_.bind(kZapEndpoint);  // before the ROUTER, so no handshake ever runs without it
  SocketLimits limits;
  limits.max_message_bytes = config_.max_message_bytes;
  // ZMTP pings to agents unless transport_pings = false (transport/curve.h: their timers cost
  // O(connections) per message in libzmq); TCP keepalive closes the connections of boards that
  // vanished (power lost, cable pulled) within about agent_timeout + 15 s either way.
  limits.heartbeat_interval_ms = config_.transport_pings ? config_.heartbeat_interval_ms : 0;
  limits.heartbeat_timeout_ms = config_.agent_timeout_ms;
  limits.tcp_keepalive_idle_s = std::max(1, config_.agent_timeout_ms / 1000);
  limits.handshake_timeout_ms = config_.handshake_timeout_ms;
  configure_curve_server(agents_, curve_keys_, kZapDomain, limits);
  // Messages queued for one connection at most: an agent that asks for chunks and never reads them
  // holds kSendQueueMessages x chunk_bytes of the daemon's memory (16 MiB by default), not libzmq's
  // default 1,000 (1 GiB); replies beyond it are dropped and counted. Honest agents read as they go.
  agents_.set(zmq::sockopt::sndhwm, kSendQueueMessages);
  // Agent connections may take all file descriptors but a reserve (the database, artifacts being
  // sent, the admin socket's connections): beyond it, and beyond the per-address limit, the guard
  // cuts new connections.
  const size_t file_limit = raise_file_limit();
  connection_guard_ = std::make_unique<ConnectionGuard>(
      context_, agents_, "agents", connection_limits(file_limit, static_cast<size_t>(config_.max_connections_per_address)));
  try {
    agents_.bind(config_.listen);
  } catch (const zmq::error_t& error) {
    fail("cannot listen on {}: {}", config_.listen, error.what());
  }
  if (!config_.relay_listen.empty()) {
    relay_keys_.insert(config_.relays.begin(), config_.relays.end());
    relays_ = std::make_unique<zmq::socket_t>(context_, zmq::socket_type::router);
    SocketLimits relay_limits = limits;
    relay_limits.heartbeat_interval_ms = config_.heartbeat_interval_ms;  // a handful of connections: pings are cheap
    configure_curve_server(*relays_, curve_keys_, kRelayZapDomain, relay_limits);
    relays_->set(zmq::sockopt::sndhwm, kRelaySendQueueMessages);
    relays_->set(zmq::sockopt::rcvhwm, kRelaySendQueueMessages);
    try {
      relays_->bind(config_.relay_listen);
    } catch (const zmq::error_t& error) {
      fail("cannot listen for relays on {}: {}", config_.relay_listen, error.what());
    }
    log(fmt::format("relays ({}) connect on {}", config_.relays.size(), config_.relay_listen));
  }
  // The admin socket: loopback TCP, CURVE, one client key pair fresh at every start (admin_client.h).
  admin_access_.client = CurveKeyPair::generate();
  admin_access_.server_public_key = curve_keys_.public_key;
  SocketLimits admin_limits;
  admin_limits.max_message_bytes = 1 << 20;
  configure_curve_server(admin_, curve_keys_, kAdminZapDomain, admin_limits);
  admin_.bind("tcp://127.0.0.1:*");
  admin_access_.endpoint = admin_.get(zmq::sockopt::last_endpoint);
  admin_access_.write(config_.state_dir);
  fs::remove(config_.state_dir + "/admin.sock");  // an older version's ipc socket
  if (!config_.metrics_listen.empty()) {
    http_ = std::make_unique<HttpEndpoint>(
        config_.metrics_listen,
        std::map<std::string, HttpEndpoint::Route>{
            {"/metrics", {"text/plain; version=0.0.4; charset=utf-8", [this] { return metrics_text(); }}},
            {"/", {"text/html; charset=utf-8", [this] { return status_page(); }}}});
    log(fmt::format("metrics on http://{0}/metrics, status page on http://{0}/", http_->address()));
  }
  if (!config_.capture_file.empty()) {
    capture_.open(config_.capture_file, std::ios::binary | std::ios::app);
    if (!capture_) fail("{}: cannot open the capture file", config_.capture_file);
  }
  // Before a recovered round's job writes again: what a kill left half-written goes.
  const ArtifactStore artifacts(config_.artifacts_dir());
  for (const std::string& removed : artifacts.remove_incoming())
    log("removed " + removed + ", an artifact write that never finished");
  for (const std::string& moved : artifacts.set_aside_unnamed(store_.artifact_paths()))
    log("moved an artifact no model, export or round names to " + moved +
        " (a stop between writing and recording it, or a restored older database); delete it when not needed");
  // A database restored from a backup (`db restore` leaves DATABASE.restored): what was running when
  // the backup was taken is not resumed - the fleet has moved on since. The registry follows what
  // agents report in their hellos; revocations and ids come back from the ledger (store.h).
  const std::string restored_marker = config_.restored_marker_path();
  std::string restored_from;
  if (std::filesystem::exists(restored_marker)) restored_from = read_text_file(restored_marker);
  for (const std::string& note : store_.ledger_notes()) log(note);
  const std::vector<RoundRecord> rounds = store_.rounds();
  for (const RoundRecord& record : rounds) {
    if (is_final(record.stage)) continue;
    if (!restored_from.empty()) {
      const std::string reason =
          fmt::format("not resumed: the database was restored from {} (taken while this round ran)", restored_from);
      store_.set_round_stage(record.id, RoundStage::kFailed, reason);
      store_.audit("coordinator", "round failed", fmt::format("round {}: {}", record.id, reason));
      continue;
    }
    if (round_ && !round_->finished()) round_->fail_round("superseded by a later unfinished round");
    round_ = Round::recover(*this, record);
  }
  // Stopped between a smoothing round and its follow-up: the follow-up starts now (not after a restore).
  if (restored_from.empty() && !rounds.empty() && rounds.back().stage == RoundStage::kDone) follow_up_of_ = rounds.back().id;
  for (const auto& record : store_.rollouts()) {
    if (is_final(record.stage)) continue;
    if (!restored_from.empty()) {
      const std::string reason = fmt::format(
          "not resumed: the database was restored from {} (taken while this rollout ran); agents keep the model they run, "
          "the registry follows their reports",
          restored_from);
      store_.save_rollout(record.id, RolloutStage::kAborted, reason, record.state_json, {});
      store_.audit("coordinator", "rollout aborted", fmt::format("rollout {}: {}", record.id, reason));
      continue;
    }
    rollout_ = Rollout::recover(*this, record);
  }
  if (!restored_from.empty()) {
    log("started on a database restored from " + restored_from + ": unfinished rounds and rollouts of the backup were ended");
    std::error_code ignored;
    std::filesystem::remove(restored_marker, ignored);
  }
  store_.set_audit_max_entries(config_.audit_max_entries);
  if (!store_.migration_backup().empty()) {
    log("the database was backed up before its schema was updated: " + store_.migration_backup());
    store_.audit("coordinator", "database backed up", store_.migration_backup() + " (before a schema update)");
  }
  last_backup_wall_ms_ = newest_backup_ms(config_.state_dir, "scheduled");
  store_.audit("coordinator", "started", "listening on " + config_.listen);
  log(fmt::format("listening on {} (CURVE public key {}), admin socket {}", config_.listen, curve_keys_.public_key,
                  admin_access_.endpoint));
  log(fmt::format("file descriptors: {}; agent connections are cut beyond {} in all or {} from one address", file_limit,
                  connection_guard_->limits().total, connection_guard_->limits().per_address));
}

Server::~Server() {
  // An aborted round's job still running: it ends before the daemon does, and what it wrote goes.
  for (std::future<QuantizationJobResult>& job : abandoned_jobs_) {
    if (job.wait_for(std::chrono::seconds(0)) != std::future_status::ready)
      log("waiting for an aborted round's quantization job to end before stopping");
    remove_abandoned_job_files(job, [this](const std::string& line) { log(line); });
  }
}

void Server::log(const std::string& line) {
  // One line per event, whatever a peer's text in it holds (newlines, terminal escapes).
  write_log(LogLevel::kInfo, "coordinator", line);
}

void Server::log_problem(LogLevel level, const std::string& line) { write_log(level, "coordinator", line); }

int64_t Server::monotonic_ms() const { return steady_ms(); }

bool Server::refused(const std::string& key, const std::string& address, const std::string& peer, const std::string& why) {
  ++counters_.refused;
  const int64_t now = monotonic_ms();
  // Both budgets count the event (no short-circuit): a flood of fresh keys from one address, or of
  // one key from many addresses, is held either way.
  const bool key_allowed = key.empty() || refusals_by_key_.allow(key, now);
  const bool address_allowed = address.empty() || refusals_by_address_.allow(address, now);
  if (!key_allowed || !address_allowed) return false;
  log_problem(LogLevel::kWarning, "refused " + peer + (address.empty() ? "" : " (" + address + ")") + ": " + why);
  audit_quietly(peer, "refused", why, /*volume=*/true);
  return true;
}

void Server::refuse(const Sender& sender, const std::string& peer, wire::ErrorReply::Code code, const std::string& why,
                    const std::string& reply, uint64_t next_sequence) {
  if (refused(sender.key, sender.address, peer, why)) reply_error(sender.route, code, reply.empty() ? why : reply, next_sequence);
}

void Server::report_floods(bool now) {
  report_refusals(now);
  report_connections(now);
}

void Server::report_refusals(bool now) {
  const int64_t at = monotonic_ms();
  const double minutes = static_cast<double>(config_.rate_window_ms) / 60000.0;
  for (auto [limiter, kind] : {std::pair{&refusals_by_key_, "key"}, std::pair{&refusals_by_address_, "address"}}) {
    const std::vector<RateLimiter::Overflow> over = limiter->take_overflow(at, now);
    uint64_t rest = 0;
    for (size_t i = 0; i < over.size(); ++i) {
      if (i >= 20) {
        rest += over[i].dropped;
        continue;
      }
      const std::string source =
          over[i].source == RateLimiter::kOtherSources ? over[i].source : std::string(kind) + " " + over[i].source;
      const std::string detail = fmt::format(
          "{} more refusals of {} in the last {:.3g} min, past its budget of {} (not answered, not recorded one by one)",
          over[i].dropped, source, minutes, config_.refusals_per_window);
      log(detail);
      audit_quietly(source, "refusals over budget", detail, true);
    }
    if (rest > 0) {
      const std::string detail = fmt::format("{} more refusals from {} other {}s over budget in the last {:.3g} min", rest,
                                             over.size() - 20, kind, minutes);
      log(detail);
      audit_quietly("coordinator", "refusals over budget", detail, true);
    }
  }
  for (const RateLimiter::Overflow& over : error_reports_by_key_.take_overflow(at, now)) {
    const std::string detail = fmt::format(
        "{} more error messages of {} in the last {:.3g} min, past its budget of {} (not logged or recorded one by one)",
        over.dropped, over.source, minutes, config_.refusals_per_window);
    log(detail);
    audit_quietly(over.source == RateLimiter::kOtherSources ? "coordinator" : over.source, "error messages over budget", detail,
                  true);
  }
}

void Server::report_connections(bool now) {
  const int64_t at = monotonic_ms();
  if (!connection_flood_logged_ && connection_guard_->has_news()) {
    connection_flood_logged_ = true;  // at once, then totals once per window
    log(fmt::format("agent connections over the limits ({} open; {} in all, {} per address): new ones are cut",
                    connection_guard_->open(), connection_guard_->limits().total, connection_guard_->limits().per_address));
  }
  if (!now && at - last_flood_report_ms_ < config_.rate_window_ms) return;
  last_flood_report_ms_ = at;
  connection_flood_logged_ = false;
  ConnectionGuard::Report connections = connection_guard_->take_report();
  uint64_t cut = 0;
  std::string by_address;
  for (const auto& [address, count] : connections.cut) {
    cut += count;
    if (by_address.size() < 400) by_address += fmt::format("{}{} from {}", by_address.empty() ? "" : ", ", count, address);
  }
  if (cut > 0 || connections.accept_failures > 0) {
    const std::string detail =
        fmt::format("{} agent connections cut ({}), {} accepts failed{}; {} open, limits {} in all and {} per address", cut,
                    by_address.empty() ? "none" : by_address, connections.accept_failures,
                    connections.accept_failures ? fmt::format(" (last: {})", std::strerror(connections.last_accept_errno)) : "",
                    connections.open, connection_guard_->limits().total, connection_guard_->limits().per_address);
    log(detail);
    audit_quietly("coordinator", "connections over limits", detail, true);
  }
}

void Server::audit_quietly(const std::string& actor, const std::string& event, const std::string& detail, bool volume) {
  try {
    if (volume) {
      store_.audit_volume(actor, event, detail);
    } else {
      store_.audit(actor, event, detail);
    }
  } catch (const std::exception& error) {
    log_problem(LogLevel::kError, fmt::format("cannot write the audit entry '{}' of {}: {}", event, actor, error.what()));
  }
}

template <typename Body>
void Server::guarded(const char* what, Body&& body) {
  std::string failure;
  try {
    body();
    return;
  } catch (const std::exception& error) {
    failure = error.what();
  } catch (...) {
    failure = "an exception of unknown type";
  }
  log_problem(LogLevel::kError, fmt::format("internal error while {}: {}", what, failure));
  audit_quietly("coordinator", "internal error", fmt::format("{}: {}", what, failure));
}

void Server::run(const std::atomic<bool>& stop) {
  std::vector<zmq::pollitem_t> items = {{agents_.handle(), 0, ZMQ_POLLIN, 0},
                                        {zap_.handle(), 0, ZMQ_POLLIN, 0},
                                        {admin_.handle(), 0, ZMQ_POLLIN, 0},
                                        {connection_guard_->events().handle(), 0, ZMQ_POLLIN, 0}};
  if (relays_) items.push_back({relays_->handle(), 0, ZMQ_POLLIN, 0});
  const size_t socket_items = items.size();
  SystemdNotifier systemd;
  systemd.ready();  // sockets bound, state recovered (the constructor)
  int64_t last_turn_ms = monotonic_ms();
  while (!stop && !shutdown_requested_) {
    systemd.keep_alive(monotonic_ms());
    const int64_t turn_ms = monotonic_ms();
    if (turn_ms - last_turn_ms > kStallMs) resume_after_stall(turn_ms - last_turn_ms);
    last_turn_ms = turn_ms;
    items.resize(socket_items);
    if (http_) http_->add_poll_items(items);
    if (!poll_interruptible(items.data(), items.size(), std::chrono::milliseconds(50))) continue;
    if (http_) guarded("answering an HTTP request", [&] { http_->handle(monotonic_ms()); });
    // Connections first: the sooner one over the limits is cut, the fewer descriptors a flood holds.
    if (items[3].revents & ZMQ_POLLIN) guarded("watching agent connections", [&] { connection_guard_->handle_events(); });
    // Nothing one message does may stop the daemon: each handler runs guarded (its own error
    // replies come first; what escapes them is logged and audited as an internal error).
    if (items[1].revents & ZMQ_POLLIN) guarded("answering a ZAP request", [&] { handle_zap(); });
    // Bounded batches, so a flood on one socket cannot starve the others.
    for (int i = 0; i < 256 && (agents_.get(zmq::sockopt::events) & ZMQ_POLLIN); ++i) {
      guarded("handling an agent message", [&] { handle_agent_message(); });
    }
    for (int i = 0; relays_ && i < 256 && (relays_->get(zmq::sockopt::events) & ZMQ_POLLIN); ++i) {
      guarded("handling a relay's message", [&] { handle_relay_message(); });
    }
    if (items[2].revents & ZMQ_POLLIN) guarded("handling an admin request", [&] { handle_admin(); });
    if (pending_admin_.valid()) guarded("finishing an admin request", [&] { finish_admin(); });
    items[2].events = pending_admin_.valid() ? 0 : ZMQ_POLLIN;  // REP: one request at a time
    tick();
  }
  systemd.stopping();
  if (round_ && !round_->finished() && round_->stage() != RoundStage::kQuantizing && round_->stage() != RoundStage::kEvaluating) {
    round_->fail_round("the coordinator was stopped");
  }
  snapshot_progress(/*everything=*/true);
  save_progress(std::numeric_limits<size_t>::max());
  report_floods(true);
  store_.audit("coordinator", "stopped", "");
}

void Server::resume_after_stall(int64_t gap_ms) {
  // Nothing was read meanwhile, so no agent's silence during the gap is known: an agent online when
  // the gap began gets a whole agent_timeout_ms from now (it may be reconnecting: its connection can
  // have timed out while we did not answer), one already silent then stays as silent, deadlines
  // move by the gap, and the round and rollout wait as long again as the gap for agents that are
  // retrying their hello (stall_grace_until). (Was: each judged as when the gap began, so an agent last heard just before it
  // had a fraction of the timeout to get through, and under load one was dropped.)
  log_problem(LogLevel::kWarning,
              fmt::format("the coordinator did not run for {} ms (paused or blocked): deadlines and agents' silence are "
                          "counted from now",
                          gap_ms));
  const int64_t now = monotonic_ms();
  for (auto& [id, session] : sessions_) {
    const bool online_when_it_began = (now - gap_ms) - session.last_heard_monotonic_ms <= config_.agent_timeout_ms;
    session.last_heard_monotonic_ms = online_when_it_began ? now : std::min(now, session.last_heard_monotonic_ms + gap_ms);
  }
  if (round_ && !round_->finished()) round_->postpone(gap_ms);
  if (rollout_) rollout_->postpone(gap_ms);
}

void Server::tick() {
  // A leader whose database session ended (the server cut it off, the network broke) lost the lead
  // with it, and a standby may lead now: it stops (systemd restarts it as a standby) instead of
  // answering agents from memory. The connection is never reopened behind its back.
  if (store_.database().dialect() == SqlDialect::kPostgres && monotonic_ms() - lead_checked_monotonic_ms_ > 2000) {
    lead_checked_monotonic_ms_ = monotonic_ms();
    try {
      store_.database().query("SELECT 1");
    } catch (const Error&) {
    }
    if (!store_.database().connected()) {
      fail_as(ErrorKind::kIo, "lost the connection to the database {} and with it the lead of the coordinators on it: stopping",
              store_.database().name());
    }
  }
  // A new snapshot once the last one is written (a slow database stretches the period, never the queue).
  if (monotonic_ms() - last_seen_flush_monotonic_ms_ > 5000 && queued_seen_.empty() && queued_sequences_.empty()) {
    snapshot_progress();
  }
  guarded("saving last-seen times", [&] { save_progress(kProgressRowsPerTurn); });
  guarded("backing up the database", [&] { backup_on_schedule(); });
  guarded("summing up floods", [&] { report_floods(false); });
  // The round's and rollout's ticks walk their agents (who a stage still waits for): at most every
  // kWalkIntervalMs, not after every loop turn (with thousands of agents a turn per message made the
  // walks 10% of a round's CPU).
  const bool walk = monotonic_ms() - last_walk_monotonic_ms_ >= kWalkIntervalMs;
  if (walk) last_walk_monotonic_ms_ = monotonic_ms();
  if (rollout_ && walk) guarded("advancing the rollout", [&] { rollout_->tick(); });
  if (round_ && walk) {
    guarded("advancing the round", [&] {
      try {
        round_->tick();
      } catch (const std::exception& error) {
        round_->fail_round(std::string("internal error: ") + error.what());
      }
    });
  }
  guarded("starting a follow-up round", [&] { advance_follow_up(); });
  guarded("removing what aborted rounds' jobs wrote", [&] {
    std::erase_if(abandoned_jobs_, [this](std::future<QuantizationJobResult>& job) {
      if (job.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return false;
      remove_abandoned_job_files(job, [this](const std::string& line) { log(line); });
      return true;
    });
  });
  // The per-agent writes in one commit (Store::flush_pending) at most every kCommitIntervalMs (or once
  // kCommitBatch wait), then the acknowledgements of the round messages they record: an agent stops
  // re-sending only what is stored. (A commit per loop turn was still ~one per agent: messages spread
  // over a stage make turns of one or two.) When the commit fails the acknowledgements are dropped: the
  // agents send again, and their copies are acknowledged once a commit holds them.
  const int64_t now = monotonic_ms();
  bool stored = !store_.has_pending_writes();  // (another write's flush may have taken them)
  if (!stored && (now - last_commit_monotonic_ms_ >= kCommitIntervalMs || store_.pending_write_count() >= kCommitBatch)) {
    last_commit_monotonic_ms_ = now;
    guarded("saving participants", [&] {
      store_.flush_pending();
      stored = true;
    });
    if (!stored) pending_acks_.clear();
  }
  if (stored) {
    for (const PendingAck& pending : pending_acks_) {
      OutgoingMessage ack;
      ack.body().initRoundAck().setRoundId(pending.round_id);
      ack.body().getRoundAck().setReceived(pending.received);
      send_to_route(pending.route, ack);
    }
    pending_acks_.clear();
  }
}

void Server::abandon(std::future<QuantizationJobResult> job) { abandoned_jobs_.push_back(std::move(job)); }

void Server::advance_follow_up() {
  if (round_ && !round_->finished()) running_round_ = round_->id();
  if (round_ && round_->finished() && running_round_ == round_->id()) {
    running_round_ = 0;
    follow_up_of_ = round_->id();
  }
  if (follow_up_of_) {
    const int64_t id = *follow_up_of_;
    follow_up_of_.reset();
    const auto record = store_.round(id);
    std::optional<Round::FollowUp> next = record ? Round::follow_up(store_, *record) : std::nullopt;
    if (next) {
      log(fmt::format("round {}: starting its follow-up round on the smoothed model {}", id, next->model.id));
      const ModelRecord model = next->model;
      follow_up_.emplace(PendingFollowUp{std::move(*next), std::async(std::launch::async, [model] { return load_round_model(model); })});
    }
  }
  if (!follow_up_ || follow_up_->loaded.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
  PendingFollowUp pending = std::move(*follow_up_);
  follow_up_.reset();
  const int64_t smoothing_round = pending.next.settings.smoothing_round;
  try {
    if (round_ && !round_->finished()) fail("round {} was started meanwhile", round_->id());
    round_ = Round::start(*this, pending.next.settings, pending.next.model, pending.loaded.get());
    store_.audit("coordinator", "follow-up round started", fmt::format("round {} after smoothing round {}", round_->id(), smoothing_round));
  } catch (const std::exception& error) {
    log(fmt::format("round {}: its follow-up round was not started: {}", smoothing_round, error.what()));
    store_.audit("coordinator", "follow-up round not started", fmt::format("after round {}: {}", smoothing_round, error.what()));
  }
}

void Server::backup_on_schedule() {
  const int64_t interval_ms = int64_t{config_.backup_interval_hours} * 3600000;
  if (backup_job_.valid()) {
    if (backup_job_.wait_for(std::chrono::seconds(0)) != std::future_status::ready) return;
    try {
      const std::string path = backup_job_.get();
      log("database backed up: " + path);
      store_.audit("coordinator", "database backed up", path);
      for (const std::string& old : prune_backups(config_.state_dir, "scheduled", config_.backup_keep)) log("deleted old backup " + old);
    } catch (const std::exception& error) {
      // E.g. a full disk: the daemon goes on; the next try is in an hour.
      last_backup_wall_ms_ = wall_ms() - interval_ms + 3600000;
      log_problem(LogLevel::kError, std::string("database backup failed (next try in an hour): ") + error.what());
      audit_quietly("coordinator", "database backup failed", error.what());
    }
    return;
  }
  if (config_.backup_interval_hours == 0) return;
  const int64_t now = wall_ms();  // scheduling across restarts, not a deadline: a clock step moves one backup
  if (now - last_backup_wall_ms_ < interval_ms) return;
  last_backup_wall_ms_ = now;
  backup_job_ = std::async(std::launch::async, [config = config_, destination = backup_path(config_, "scheduled")] {
    backup_database(config, destination);
    return destination;
  });
}

void Server::snapshot_progress(bool everything) {
  last_seen_flush_monotonic_ms_ = monotonic_ms();
  for (auto& [id, session] : sessions_) {
    if (session.last_seen_ms > session.last_persisted_ms &&
        (everything || session.last_seen_ms - session.last_persisted_ms >= kLastSeenStepMs || !is_online(id))) {
      queued_seen_.emplace_back(id, session.last_seen_ms);
      session.last_persisted_ms = session.last_seen_ms;
    }
  }
  for (const std::string& key : unsaved_sequences_) queued_sequences_.emplace_back(key, last_sequence_.at(key).last());
  unsaved_sequences_.clear();
}

void Server::save_progress(size_t max_rows) {
  // Taken off the queue first: a failing disk loses this chunk's rows (written again once the
  // agents are heard again), not the loop's turns.
  std::vector<std::pair<int64_t, int64_t>> seen;
  while (!queued_seen_.empty() && seen.size() < max_rows) {
    seen.push_back(queued_seen_.front());
    queued_seen_.pop_front();
  }
  std::vector<std::pair<std::string, uint64_t>> sequences;
  while (!queued_sequences_.empty() && sequences.size() < max_rows) {
    sequences.push_back(std::move(queued_sequences_.front()));
    queued_sequences_.pop_front();
  }
  store_.agents_seen(seen);
  store_.save_sequences(sequences);
}

void Server::handle_agent_message() {
  std::vector<zmq::message_t> frames = receive_multipart(agents_);
  if (frames.empty()) return;
  ++counters_.messages_received;
  for (const zmq::message_t& frame : frames) counters_.bytes_received += frame.size();
  const auto property = [&](const char* name) {
    const char* value = frames.back().gets(name);
    return std::string(value ? value : "");
  };
  const Sender sender{{frames[0].to_string(), "", "", ""}, property("User-Id"), property("Peer-Address")};
  const std::string& key = sender.key;
  if (frames.size() != 3 || frames[1].to_string_view() != kFrameTag) {
    refused(key, sender.address, "peer", fmt::format("{} frames without the {} tag", frames.size(), kFrameTag));
    return;
  }
  if (key.size() != 40) {
    refused("", sender.address, "peer", "message without an authenticated CURVE key");
    return;
  }
  receive(sender, std::span(static_cast<const std::byte*>(frames[2].data()), frames[2].size()));
}

void Server::receive(const Sender& sender, std::span<const std::byte> raw) {
  const std::string& key = sender.key;
  try {
    DecodedEnvelope decoded = decode_envelope(raw, static_cast<size_t>(config_.max_message_bytes));
    reading_message([&] { dispatch(sender, decoded.envelope(), raw); });
  } catch (const std::exception& error) {
    // The one boundary policy for agent messages: the kind says whose fault it is. Only invalid
    // input is the peer's ("refused"); our own failures are audited as such and answered, so the
    // agent does not wait, without our internals.
    const ErrorKind kind = kind_of(error);
    if (kind == ErrorKind::kInvalidInput || kind == ErrorKind::kNotFound) {
      refuse(sender, "key " + key, reply_code(kind), error.what());
    } else {
      log_problem(LogLevel::kError, fmt::format("{} while handling a message of key {}: {}", error_kind_name(kind), key, error.what()));
      audit_quietly("key " + key, error_kind_name(kind), error.what(), true);
      reply_error(sender.route, reply_code(kind), "the coordinator could not handle this message");
    }
  }
}

void Server::dispatch(const Sender& sender, wire::Envelope::Reader envelope, std::span<const std::byte> raw) {
  const std::string& curve_key = sender.key;
  const Route& route = sender.route;
  const auto body = envelope.getBody();
  // Replay protection per enrolled key. An unknown key may only enroll, with a one-time token, so
  // nothing is kept for it: a flood of fresh keys holds no memory (it used to hold ~365 bytes each).
  auto known = last_sequence_.find(curve_key);
  if (known == last_sequence_.end()) {
    const auto agent = store_.agent_by_key(curve_key);
    if (agent) known = last_sequence_.emplace(curve_key, ReplayWindow(agent->last_sequence)).first;
  }
  ReplayWindow unknown_key;
  ReplayWindow& window = known != last_sequence_.end() ? known->second : unknown_key;
  // Numbers from 2^63 up are refused, so the next acceptable one always exists (and fits the store).
  if (envelope.getSequence() >= uint64_t{1} << 63)
    fail("sequence number {} is out of range (below 2^63)", envelope.getSequence());
  if (!window.accept(envelope.getSequence())) {
    // The reply says where to continue: an honest agent whose counter fell behind is not locked out.
    refuse(sender, "key " + curve_key, wire::ErrorReply::Code::REPLAYED,
           fmt::format("replayed '{}' (sequence {}, highest {})", body_name(envelope), envelope.getSequence(), window.last()),
           "sequence number already seen", window.last() + 1);
    return;
  }
  if (known != last_sequence_.end()) unsaved_sequences_.insert(curve_key);

  if (body.which() == Body::ENROLL) {
    const auto enroll = body.getEnroll();
    const std::string name = read_text(enroll.getName(), 128);
    const auto id = store_.redeem_token(enroll.getToken().cStr(), curve_key, name);
    if (!id) {
      refuse(sender, "key " + curve_key, wire::ErrorReply::Code::BAD_TOKEN,
             "the enrollment token is unknown, already used or expired");
      return;
    }
    store_.audit("agent " + std::to_string(*id), "enrolled", name);
    last_sequence_.insert_or_assign(curve_key,
                                    ReplayWindow(envelope.getSequence()));  // enrolled now: its next message continues above
    unsaved_sequences_.insert(curve_key);
    OutgoingMessage reply;
    auto enrolled = reply.body().initEnrolled();
    enrolled.setAgentId(static_cast<uint64_t>(*id));
    enrolled.setSigningKey(as_data(signing_key_.public_key_bytes()));
    send_to_route(route, reply);
    return;
  }

  const std::optional<AgentRecord> agent = registered_agent(curve_key);
  if (!agent || agent->revoked_at_ms) {
    const std::string why = agent ? "the agent is revoked" : "the key is not enrolled";
    refuse(sender, "key " + curve_key, wire::ErrorReply::Code::NOT_ENROLLED, fmt::format("'{}': {}", body_name(envelope), why),
           why);
    return;
  }
  Session& session = heard_from(*agent, route, body.which() == Body::HELLO);
  const std::string peer = "agent " + std::to_string(agent->id);

  switch (body.which()) {
    case Body::HELLO: {
      const std::string profile = profile_json(body.getHello().getProfile()).dump();
      const std::string active = read_text(body.getHello().getActiveModel(), 128);
      // A hello starts every connection: its number is saved at once, so no restart forgets it.
      const std::string last_error =
          store_.record_hello(agent->id, session.last_seen_ms, profile, envelope.getSequence(), active);
      session.last_persisted_ms = session.last_seen_ms;
      OutgoingMessage reply;
      auto welcome = reply.body().initWelcome();
      welcome.setAgentId(static_cast<uint64_t>(agent->id));
      welcome.setHeartbeatIntervalMs(static_cast<uint32_t>(config_.heartbeat_interval_ms));
      welcome.setSigningKey(as_data(signing_key_.public_key_bytes()));
      welcome.setAcksRoundMessages(true);
      welcome.setPackageUrl(config_.package_url);
      send_to_route(route, reply);
      session.resends_round_messages = body.getHello().getResendsRoundMessages();
      session.crashes_since_activation = body.getHello().getCrashesSinceActivation();
      session.unavailable = read_text(body.getHello().getUnavailable(), 1000);
      if (!session.unavailable.empty()) {
        log_problem(LogLevel::kWarning, fmt::format("{} cannot take part in rounds: {}", peer, session.unavailable));
        store_.set_agent_problem(agent->id, session.last_seen_ms, "unavailable: " + session.unavailable);
      } else if (last_error.rfind("unavailable: ", 0) == 0) {           // as stored, not the cache's
        store_.set_agent_problem(agent->id, session.last_seen_ms, "");  // it can work again
      }
      if (round_ && !round_->finished()) {
        if (session.unavailable.empty())
          round_->agent_online(agent->id, body.getHello().getRoundId());
        else
          round_->leave(agent->id, "unavailable", session.unavailable);
      }
      if (rollout_) rollout_->agent_online(agent->id, active, session.crashes_since_activation);
      return;
    }
    case Body::HEARTBEAT: {
      ++counters_.heartbeats_answered;
      OutgoingMessage reply;
      reply.body().initHeartbeat();
      send_to_route(route, reply);
      return;
    }
    case Body::ACTIVATION_REPORT: {
      if (!rollout_) {
        reply_error(route, wire::ErrorReply::Code::UNEXPECTED, "no rollout");
        return;
      }
      with_context([&] { return peer; }, [&] { rollout_->handle(agent->id, body.getActivationReport()); });
      return;
    }
    case Body::CHUNK_REQUEST: {
      const auto request = body.getChunkRequest();
      const std::string sha = read_text(request.getSha256(), 128);
      const auto model = store_.model_by_sha(sha);
      // Only what this agent was assigned (by the round or the rollout); anything else, whether it
      // exists or not, is answered alike.
      // Or the package the registry says is active on it: a damaged copy is fetched again (repair).
      const bool assigned = (round_ && round_->assigned(agent->id, sha)) || (rollout_ && rollout_->assigned(agent->id, sha)) ||
                            (!sha.empty() && store_.active_model(agent->id) == sha);
      if (!model) {
        reply_error(route, wire::ErrorReply::Code::NOT_FOUND, fmt::format("no artifact {}", sha));
        return;
      }
      if (!assigned) {
        refuse(sender, peer, wire::ErrorReply::Code::NOT_FOUND,
               fmt::format("chunk of artifact {}: not assigned to it", sha.substr(0, 16)), fmt::format("no artifact {}", sha));
        return;
      }
      if (!fs::exists(model->path)) {
        // Gone from the artifact store (deleted by hand, a lost disk): not the agent's fault. What
        // needs it ends at once with the reason, instead of agents asking for it forever.
        artifact_missing(*model);
        reply_error(route, wire::ErrorReply::Code::NOT_FOUND, fmt::format("artifact {} is missing on the coordinator", sha));
        return;
      }
      const uint64_t total = static_cast<uint64_t>(model->bytes);
      if (request.getOffset() > total) fail("chunkRequest.offset {} is past the end ({} bytes)", request.getOffset(), total);
      const uint64_t length =
          std::min<uint64_t>({request.getLength(), static_cast<uint64_t>(config_.chunk_bytes), total - request.getOffset()});
      std::ifstream in(model->path, std::ios::binary);
      in.seekg(static_cast<std::streamoff>(request.getOffset()));
      OutgoingMessage reply;
      auto chunk = reply.body().initChunk();
      chunk.setSha256(model->sha256);
      chunk.setOffset(request.getOffset());
      chunk.setTotalBytes(total);
      auto data = chunk.initData(static_cast<unsigned>(length));
      in.read(reinterpret_cast<char*>(data.begin()), static_cast<std::streamsize>(length));
      if (!in) fail("artifact {}: read error", model->path);
      send_to_route(route, reply);
      counters_.package_bytes_sent += length;
      return;
    }
    case Body::ERROR: {
      if (config_.fault_injection == "throw-on-agent-error") throw std::logic_error("fault injection: throw-on-agent-error");
      // Within a budget per agent and window, logged and audited one by one; past it counted, and
      // summed up once per window (report_refusals).
      if (!error_reports_by_key_.allow(peer, monotonic_ms())) return;
      const std::string text = read_text(body.getError().getMessage(), 1000);
      log_problem(LogLevel::kWarning, fmt::format("{} reports an error: {}", peer, text));
      // A package that failed its hash check on the device: the agent's problem until its next hello.
      if (body.getError().getCode() == wire::ErrorReply::Code::DAMAGED)
        store_.set_agent_problem(agent->id, session.last_seen_ms, "damaged package: " + text);
      audit_quietly(peer, "agent error", text, /*volume=*/true);
      return;
    }
    case Body::ROUND_LEAVE: {
      const auto leave = body.getRoundLeave();
      const std::string cause = cause_name(leave.getCause());
      const std::string reason = read_text(leave.getReason(), 1000);
      if (leave.getCause() != wire::RoundLeave::Cause::SHUTTING_DOWN) {
        store_.set_agent_problem(agent->id, session.last_seen_ms, fmt::format("round {}: {}: {}", leave.getRoundId(), cause, reason));
      }
      if (round_ && round_->id() == static_cast<int64_t>(leave.getRoundId())) {
        round_->leave(agent->id, cause, reason);
      } else {
        log(fmt::format("{} leaves round {} ({}): {}", peer, leave.getRoundId(), cause, reason));
      }
      return;
    }
    case Body::JOIN:
    case Body::SHARE_KEYS:
    case Body::MASKED_INPUT:
    case Body::UNMASK_SHARES:
    case Body::SHARE_OPENING:
    case Body::LOCAL_REPORT: {
      capture(static_cast<uint64_t>(agent->id), raw);
      const uint64_t round_id = round_message_id(body);
      if (!round_ || round_->id() != static_cast<int64_t>(round_id) || round_->finished()) {
        answer_stale_round_message(session, route, peer, round_id, envelope);
        return;
      }
      with_context([&] { return peer; }, [&] { round_->handle(agent->id, envelope); });
      // Handled (a duplicate or a late copy too, without blame): the agent stops re-sending it.
      if (session.resends_round_messages) acknowledge(route, round_id, body_name(envelope));
      if (body.which() == Body::LOCAL_REPORT) {
        // A check that ran clears the agent's last problem; one that could not run is its problem now.
        const std::string error = read_text(body.getLocalReport().getError(), 1000);
        if (!error.empty() || !store_.agent_by_key(curve_key)->last_error.empty())
          store_.queue_agent_problem(agent->id, session.last_seen_ms,
                                     error.empty() ? "" : fmt::format("round {}: check failed: {}", round_->id(), error));
      }
      return;
    }
    default:
      refuse(sender, peer, wire::ErrorReply::Code::BAD_MESSAGE,
             fmt::format("'{}' is not a message agents send", body_name(envelope)));
  }
}

Server::Session& Server::heard_from(const AgentRecord& agent, const Route& route, bool hello) {
  Session& session = sessions_[agent.id];
  const bool was_online = is_online(agent.id);
  // A message on another connection than the last: the old one was dropped (a network outage, or a
  // pause of either side longer than the transport's heartbeat timeout), and what was in flight on
  // it may be lost. The round and the rollout send it again, as to an agent coming back.
  const bool reconnected = was_online && !session.route.id.empty() && session.route != route;
  session.route = route;
  session.last_seen_ms = now_ms();
  session.last_heard_monotonic_ms = monotonic_ms();
  // The first message after a silence or a coordinator restart brings the agent back, whatever it is
  // (a heartbeat, or a join it computed while we were down): the round and the rollout send it what it
  // missed. A hello does that itself, with what it says.
  if ((!was_online || reconnected) && !hello) {
    if (round_ && !round_->finished() && session.unavailable.empty()) round_->agent_online(agent.id);
    if (rollout_) rollout_->agent_online(agent.id, store_.active_model(agent.id));
  }
  return session;
}

std::optional<AgentRecord> Server::registered_agent(const std::string& curve_key) {
  const auto cached = registry_cache_.find(curve_key);
  if (cached != registry_cache_.end()) return cached->second;
  std::optional<AgentRecord> agent = store_.agent_by_key(curve_key);
  if (agent) registry_cache_.emplace(curve_key, *agent);  // unknown keys are not kept (a flood of fresh keys holds nothing)
  return agent;
}

void Server::capture(uint64_t id, std::span<const std::byte> bytes) {
  if (!capture_) return;
  const uint64_t header[2] = {id, bytes.size()};
  capture_.write(reinterpret_cast<const char*>(header), sizeof(header));
  capture_.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  capture_.flush();
}

void Server::acknowledge(const Route& route, uint64_t round_id, const std::string& received) {
  pending_acks_.push_back({route, round_id, received});  // sent by tick(), after the turn's commit
}

void Server::answer_stale_round_message(const Session& session, const Route& route, const std::string& peer, uint64_t round_id,
                                        wire::Envelope::Reader envelope) {
  const auto body = envelope.getBody();
  // A report on a round that ended done is simply late (or a copy): acknowledged. Anything else
  // for a round that is not running tells the agent the round is over for it, so it drops its part
  // and stops re-sending; not the agent's fault (it may have been paused, or the coordinator was).
  // A round id never issued is no late message: refused (and counted against the sender's budget).
  if (round_id > static_cast<uint64_t>(INT64_MAX))
    fail("'{}' for round {}, which was never started", body_name(envelope), round_id);
  const auto record = store_.round(static_cast<int64_t>(round_id));
  if (!record && !store_.round_id_issued(static_cast<int64_t>(round_id)))
    fail("'{}' for round {}, which was never started", body_name(envelope), round_id);
  if (record && record->stage == RoundStage::kDone && body.which() == Body::LOCAL_REPORT) {
    if (session.resends_round_messages) acknowledge(route, round_id, "localReport");
    return;
  }
  std::string reason = fmt::format("round {} is not running", round_id);
  if (record && record->stage == RoundStage::kFailed) reason = fmt::format("round {} failed: {}", round_id, record->failure);
  if (record && record->stage == RoundStage::kDone) reason = fmt::format("round {} has ended", round_id);
  if (error_reports_by_key_.allow(peer, monotonic_ms()))  // logged within the same budget as agents' error messages
    log(fmt::format("{}: a round message for a round that is not running ({}); told so", peer, reason));
  OutgoingMessage abort;
  abort.body().initRoundAbort().setRoundId(round_id);
  abort.body().getRoundAbort().setReason(reason.substr(0, 1000));
  send_to_route(route, abort);
}

void Server::send_to_route(const Route& route, OutgoingMessage& message) {
  const std::vector<std::byte> bytes = message.encode(++next_sequence_);
  ++counters_.messages_sent;
  counters_.bytes_sent += bytes.size();
  try {
    // Directly, or through the agent's relay (protocol/relay_frames.h).
    zmq::socket_t& socket = route.relayed_id.empty() ? agents_ : *relays_;
    socket.send(zmq::buffer(route.id), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    if (route.relayed_id.empty()) {
      socket.send(zmq::buffer(kFrameTag), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    } else {
      for (const std::string_view frame :
           {kRelayFrameTag, kRelayAgentFrame, std::string_view(route.relayed_id), std::string_view(route.relayed_key)})
        socket.send(zmq::buffer(frame), zmq::send_flags::sndmore | zmq::send_flags::dontwait);
    }
    socket.send(zmq::buffer(bytes.data(), bytes.size()), zmq::send_flags::dontwait);
  } catch (const zmq::error_t& error) {
    // EHOSTUNREACH (ROUTER_MANDATORY): the peer is gone; it will be marked offline by its silence.
    // EAGAIN: its queue is full (kSendQueueMessages): it does not read. Logged once per 10 s.
    ++counters_.dropped;
    if (monotonic_ms() - last_drop_log_ms_ >= 10000) {
      log(fmt::format("cannot deliver a message: {} ({} dropped so far)", error.what(), counters_.dropped));
      last_drop_log_ms_ = monotonic_ms();
    }
  }
}

void Server::reply_error(const Route& route, wire::ErrorReply::Code code, const std::string& text, uint64_t next_sequence) {
  OutgoingMessage reply;
  auto error = reply.body().initError();
  error.setCode(code);
  error.setNextSequence(next_sequence);
  error.setMessage(text.substr(0, 1000));
  send_to_route(route, reply);
}

void Server::artifact_missing(const ModelRecord& model) {
  const std::string reason = fmt::format("model {} ({}) is missing from the artifact store", model.id, model.path);
  log_problem(LogLevel::kError, reason);
  if (rollout_ && !rollout_->finished() && rollout_->uses_model(model.id)) {
    rollout_->rollback(reason);
  }
  if (round_ && !round_->finished() && round_->model_id() == model.id) round_->fail_round(reason);
}

void Server::send(int64_t agent_id, OutgoingMessage& message) {
  const auto session = sessions_.find(agent_id);
  if (session == sessions_.end()) return;
  send_to_route(session->second.route, message);
}

bool Server::is_online(int64_t agent_id) const {
  const auto session = sessions_.find(agent_id);
  return session != sessions_.end() && monotonic_ms() - session->second.last_heard_monotonic_ms < config_.agent_timeout_ms;
}

std::vector<int64_t> Server::online_agents() const {
  std::vector<int64_t> out;
  for (const auto& [id, session] : sessions_) {
    if (is_online(id)) out.push_back(id);
  }
  return out;
}

}  // namespace fedcal::coordinator
