// The coordinator daemon: one event loop over the agents' ROUTER (CURVE, ZAP-checked against the
// registry, its connections bounded by a ConnectionGuard), the ZAP handler and the admin socket the
// CLI talks to (loopback CURVE, see admin_client.h) - plus a tick that drives the active round's
// deadlines and sums up floods once per window.
#pragma once

#include <zmq.hpp>

#include <atomic>
#include <fstream>
#include <functional>
#include <future>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>

#include "common/log_line.h"
#include "common/signing.h"
#include "coordinator/admin_client.h"
#include "coordinator/coordinator_config.h"
#include "coordinator/http_endpoint.h"
#include "coordinator/rate_limiter.h"
#include "coordinator/replay_window.h"
#include "coordinator/rollout.h"
#include "coordinator/round.h"
#include "coordinator/state_lock.h"
#include "coordinator/store.h"
#include "transport/connection_guard.h"
#include "transport/curve.h"

namespace fedcal::coordinator {

inline constexpr const char* kZapDomain = "fedcal";
inline constexpr const char* kRelayZapDomain = "fedcal-relay";
// Messages queued for one relay connection at most (a round's announcement to all its agents).
inline constexpr int kRelaySendQueueMessages = 1 << 20;
// The event loop turns every 50 ms at most; a turn this much later means the daemon did not run.
inline constexpr int64_t kStallMs = 2000;
// Last-seen and sequence rows written per loop turn (Server::save_progress): one statement each.
inline constexpr size_t kProgressRowsPerTurn = 512;
// An online agent's stored last-seen time may lag its real one by this much (snapshot_progress).
inline constexpr int64_t kLastSeenStepMs = 60000;
// The round and the rollout advance (Round::tick, Rollout::tick) at most this often.
inline constexpr int64_t kWalkIntervalMs = 50;
// A round's per-agent writes are committed together at most this often, or once this many wait.
inline constexpr int64_t kCommitIntervalMs = 25;
inline constexpr size_t kCommitBatch = 2048;

class Server : public RoundHost {
 public:
  // Opens (creating on first start) the state folder, database and keys, binds the sockets and
  // recovers an unfinished round.
  // `database`: the store's connection when the caller opened it (open_database_as_leader: this
  // process leads the coordinators on it); else the configured database is opened.
  explicit Server(CoordinatorConfig config, std::unique_ptr<SqlConnection> database = nullptr);
  ~Server() override;
  void abandon(std::future<QuantizationJobResult> job) override;

  // Serves until `stop` becomes true (signal handler) or an admin "shutdown" request.
  void run(const std::atomic<bool>& stop);

  // RoundHost
  void send(int64_t agent_id, OutgoingMessage& message) override;
  bool is_online(int64_t agent_id) const override;
  std::vector<int64_t> online_agents() const override;
  Store& store() override { return store_; }
  const CoordinatorConfig& config() const override { return config_; }
  void log(const std::string& line) override;  // an INFO line (common/log_line.h)
  void log_problem(LogLevel level, const std::string& line);
  int64_t monotonic_ms() const override;
  std::optional<RelayedAgent> relayed(int64_t agent_id) const override;
  void send_to_relay(const std::string& relay_route, std::string_view kind, const std::string& payload) override;
  Signature sign(std::span<const std::byte> message) const override { return signing_key_.sign(message); }

  // Where an agent is reached: its connection on the agents' socket, or its connection at a relay
  // (relay/), through the relay's connection here (protocol/relay_frames.h).
  struct Route {
    std::string id;           // the routing id on the agents' socket: the agent's, or its relay's
    std::string relayed_id;   // through a relay: the agent's routing id at the relay ("": direct)
    std::string relayed_key;  // through a relay: the agent's CURVE key
    std::string relay_key;    // through a relay: the relay's CURVE key (a group's result is taken by it)
    bool operator==(const Route&) const = default;
  };
  // Who sent an agent message: its route, CURVE key (libzmq's User-Id, or as its relay names it) and
  // IP address.
  struct Sender {
    Route route;
    std::string key, address;
  };
  // The boundary every agent message passes once libzmq has authenticated it: decode, dispatch,
  // refusal policy; nothing escapes. Public for the fuzz target, which calls it directly.
  void receive(const Sender& sender, std::span<const std::byte> raw);
  // One admin command run to completion on the calling thread (a worker's part waited for); throws
  // Error as the admin socket would answer it. For in-process drivers (the fuzz target's setup).
  nlohmann::json run_command(const nlohmann::json& request);
  // What the event loop does after each poll: deadlines of the round and rollout, periodic saves,
  // flood summaries. Public for in-process drivers.
  void tick();

 private:
  struct Session {
    Route route;
    int64_t last_seen_ms = 0;             // wall clock, for display and the registry
    int64_t last_heard_monotonic_ms = 0;  // liveness
    int64_t last_persisted_ms = 0;
    unsigned crashes_since_activation = 0;  // from its last hello
    std::string unavailable;                // its last hello: why it cannot take part in rounds ("" if it can)
    bool resends_round_messages = false;    // its last hello: it understands roundAck and re-sends until then
  };

  void handle_zap();
  void handle_agent_message();
  void dispatch(const Sender& sender, wire::Envelope::Reader envelope, std::span<const std::byte> raw);
  // A message on the relays' socket (server_relays.cpp): an agent's message a relay forwards
  // (dispatched as the agent's) or its presence report.
  void handle_relay_message();
  // Agents a relay heard from (their heartbeats answered there): online as if they had heartbeated
  // here; the ones not enrolled or revoked are named back to the relay, which stops answering them.
  void relay_presence(const std::string& relay_route, const std::string& relay_key, std::string_view entries);
  // Tells the relay on `route` to stop answering the agent there (revoked, or not enrolled).
  void cut_at_relay(const Route& route);
  // [relay_route] [tag] [kind] [payload] on the relays' socket.
  // Word from enrolled `agent` over `route` (a message, or its relay's presence report): its session
  // is online on that route. Unless the word is a hello (which says more), an agent coming back after
  // a silence, a reconnection or a coordinator restart is brought back into the round and rollout.
  Session& heard_from(const AgentRecord& agent, const Route& route, bool hello);
  void reply_error(const Route& route, wire::ErrorReply::Code code, const std::string& message, uint64_t next_sequence = 0);
  void send_to_route(const Route& route, OutgoingMessage& message);
  // The event loop did not turn for `gap_ms` (> kStallMs): a SIGSTOP, a suspended VM, a blocked handler.
  void resume_after_stall(int64_t gap_ms);
  // The registry's record of an enrolled key, from memory after its first message (a heartbeat costs
  // no SQL). Its id and revocation are what is read from it; anything that changes (last_error) is
  // read from the store. Every revocation clears the cache.
  std::optional<AgentRecord> registered_agent(const std::string& curve_key);
  // roundAck: the round message of kind `received` was handled (or was a copy of one that was).
  void acknowledge(const Route& route, uint64_t round_id, const std::string& received);  // queued: sent after the turn's commit
  // A round message for a round that is not the running one (ended, failed, or unknown).
  void answer_stale_round_message(const Session& session, const Route& route, const std::string& peer, uint64_t round_id,
                                  wire::Envelope::Reader envelope);
  // Admin commands (server_admin.cpp): one table entry each. An answer is ready now, or `later`
  // yields, from a worker thread, the step the event loop runs to finish it (store writes stay on the
  // loop). While one is pending the admin socket waits (REP) and agents keep being served.
 public:
  struct AdminReply {
    nlohmann::json now;
    std::future<std::function<nlohmann::json()>> later;
  };

 private:
  void register_admin_commands();
  AdminReply start_command(const nlohmann::json& request);  // the table's entry for request["command"]
  void handle_admin();
  void finish_admin();  // sends a pending command's reply once its worker is done
  void send_admin_reply(nlohmann::json reply);
  void send_admin_error(const std::string& message);
  nlohmann::json round_json(int64_t id, bool agents = true);  // `agents`: a running round's per-agent list too
  // A refusal (of `peer`, a label for the log): logged and audited (`why`) while the sender's key and
  // address are within their budgets (config refusals_per_window); past them it is only counted, and
  // report_floods() sums it up. Returns whether it was handled one by one.
  bool refused(const std::string& key, const std::string& address, const std::string& peer, const std::string& why);
  // The same for an agent message, answered too while within the budgets: an error with `code`,
  // `reply` as its text (empty: `why`) and `next_sequence`.
  void refuse(const Sender& sender, const std::string& peer, wire::ErrorReply::Code code, const std::string& why,
              const std::string& reply = "", uint64_t next_sequence = 0);
  // Once per rate window (or `now`): one log line and audit entry per source over budget (the 20
  // largest, then a total), and what the connection guard cut.
  void report_floods(bool now);
  void report_refusals(bool now);
  void report_connections(bool now);
  // A model whose file is gone from the artifact store: the rollout or round that needs it ends.
  void artifact_missing(const ModelRecord& model);
  // An audit entry that cannot fail the caller (a database error is logged instead); `volume`: one a
  // peer can cause at will (Store::audit_volume).
  void audit_quietly(const std::string& actor, const std::string& event, const std::string& detail, bool volume = false);
  // An agent as its registry entry and its session show it now.
  struct AgentView {
    bool online = false;
    std::string state;         // "online", "offline" or "revoked"
    unsigned crashes = 0;      // since its active model was activated, from its last hello
    int64_t last_seen_ms = 0;  // wall clock
    // What is wrong: the last problem it reported, crashes of its active model, silence (a revoked
    // agent has none).
    std::vector<std::string> problems;
  };
  AgentView agent_view(const AgentRecord& agent, int64_t wall_now) const;
  // The Prometheus text of /metrics (server_metrics.cpp).
  std::string metrics_text();
  // The status page, GET / (status_page.h), from the replies of status, agents.list, round.status
  // (the latest rounds) and rollout.status.
  std::string status_page();
  // agents.list's reply for the filters of `request` (state, label, failing, sort).
  nlohmann::json agents_list(const nlohmann::json& request);
  // The active rollout's status, else the last one's; null if there was none.
  nlohmann::json rollout_json();
  // Runs one handler of the event loop; anything it throws is logged and audited, never escapes.
  template <typename Body>
  void guarded(const char* what, Body&& body);
  // Last-seen times and sequence numbers reach the store in the background of the loop: every 5 s
  // what is due is queued (snapshot_progress), and each loop turn writes at most a chunk of the queue
  // (save_progress), so 10,000 agents' rows never hold the loop for one long statement (on PostgreSQL
  // ~0.6 s, a heartbeat reply p99 of 580 ms when written at once).
  // A last-seen time is queued once it moved kLastSeenStepMs past the stored one, or the agent went
  // offline (its final time), or `everything` (at stop): the registry's "last seen" is for agents
  // that are away, and 10,000 agents heard every 2 s need not be rewritten every 5 s.
  void snapshot_progress(bool everything = false);
  void save_progress(size_t max_rows);
  // Every backup_interval_hours: a consistent copy of the database on a worker (database_guard.h).
  void backup_on_schedule();
  // Starts the follow-up of a smoothing round once it is done (also after a restart between the two).
  void advance_follow_up();

  CoordinatorConfig config_;
  StateLock state_lock_;  // before anything in the state folder is opened
  Store store_;
  CurveKeyPair curve_keys_;
  SigningKey signing_key_;
  zmq::context_t context_;
  zmq::socket_t agents_;
  zmq::socket_t zap_;
  zmq::socket_t admin_;
  // Relays connect here (relay_listen; null without relays): only keys in `relays` (ZAP), and a deep
  // queue per connection, as each carries thousands of agents' messages.
  std::unique_ptr<zmq::socket_t> relays_;
  AdminAccess admin_access_;
  std::unique_ptr<ConnectionGuard> connection_guard_;
  std::unique_ptr<HttpEndpoint> http_;  // /metrics and the status page; null unless metrics_listen is set
  struct Counters {
    uint64_t messages_received = 0, bytes_received = 0, messages_sent = 0, bytes_sent = 0, refused = 0;
    uint64_t dropped = 0;  // not delivered: the peer was gone or its queue full
    uint64_t package_bytes_sent = 0;  // package chunks the coordinator served itself (not over HTTP)
    uint64_t heartbeats_answered = 0;  // here (a relay answers its agents' heartbeats itself)
  } counters_;
  int64_t last_drop_log_ms_ = -1000000;
  int64_t last_walk_monotonic_ms_ = INT64_MIN / 2;  // the round's and rollout's last tick
  static constexpr int kSendQueueMessages = 16;
  RateLimiter refusals_by_key_;
  RateLimiter refusals_by_address_;
  RateLimiter error_reports_by_key_;  // an agent's error messages: logged and audited within this budget
  std::map<int64_t, Session> sessions_;
  // Replay protection: the highest accepted sequence number by CURVE key, loaded from the store on a
  // key's first message after a start and saved with the last-seen times (every 5 s, and at stop).
  std::map<std::string, ReplayWindow> last_sequence_;
  std::set<std::string> relay_keys_;                   // config_.relays
  uint64_t relay_presence_entries_ = 0;                // agents' presence reported by relays since the start (metrics)
  std::map<std::string, AgentRecord> registry_cache_;  // by CURVE key (registered_agent)
  std::set<std::string> unsaved_sequences_;
  std::deque<std::pair<int64_t, int64_t>> queued_seen_;               // (agent id, last seen), oldest first
  std::deque<std::pair<std::string, uint64_t>> queued_sequences_;  // (CURVE key, sequence), oldest first
  uint64_t next_sequence_;
  std::unique_ptr<Round> round_;
  struct PendingAck {
    Route route;
    uint64_t round_id = 0;
    std::string received;
  };
  std::vector<PendingAck> pending_acks_;  // roundAcks, sent once the writes they acknowledge are committed
  int64_t last_commit_monotonic_ms_ = INT64_MIN / 2;
  std::unique_ptr<Rollout> rollout_;
  std::ofstream capture_;
  // Appends [id u64][length u64][bytes] to capture_file when one is set (an agent's aggregation
  // message by its agent id, a relay group's result with id 2^64 - 1).
  void capture(uint64_t id, std::span<const std::byte> bytes);
  bool shutdown_requested_ = false;
  std::map<std::string, std::function<AdminReply(const nlohmann::json& request)>> admin_commands_;
  std::future<std::string> backup_job_;  // the backup's path (its worker uses no member)
  // A smoothing round's follow-up (Round::follow_up): the done round not yet looked at, and the next
  // round's model loading on a worker (which uses no member).
  int64_t running_round_ = 0;
  std::optional<int64_t> follow_up_of_;
  struct PendingFollowUp {
    Round::FollowUp next;
    std::future<RoundModel> loaded;
  };
  std::optional<PendingFollowUp> follow_up_;
  // Quantization jobs of aborted rounds, running to their end off the loop (RoundHost::abandon).
  std::vector<std::future<QuantizationJobResult>> abandoned_jobs_;
  std::future<std::function<nlohmann::json()>> pending_admin_;  // last member: its worker uses the ones above
  int64_t last_seen_flush_monotonic_ms_ = 0;
  int64_t lead_checked_monotonic_ms_ = 0;  // PostgreSQL: the lead's session is checked every 2 s
  int64_t last_backup_wall_ms_ = 0;
  int64_t last_flood_report_ms_ = 0;
  bool connection_flood_logged_ = false;
};

}  // namespace fedcal::coordinator
