// The coordinator's durable state: the agent registry, enrollment tokens, models and artifacts,
// rounds with their stage, participants, aggregates, and an audit log. In one SQLite file by default
// (WAL with synchronous=FULL: a committed stage survives power loss; foreign keys on, a busy timeout,
// IMMEDIATE transactions for every write that reads first), or in PostgreSQL (database_url in the
// config): the same SQL and the same contract (tests/coordinator/store_test.cpp runs on both).
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "coordinator/sql_connection.h"
#include "coordinator/stages.h"

namespace fedcal::coordinator {

int64_t now_ms();

struct AgentRecord {
  int64_t id = 0;
  std::string public_key;  // CURVE, Z85
  std::string name;
  int64_t enrolled_at_ms = 0;
  std::optional<int64_t> revoked_at_ms;
  int64_t last_seen_ms = 0;
  std::string profile_json;      // the last hello's hardware profile
  std::string active_model_sha;  // the package in its active slot, as it last reported
  uint64_t last_sequence = 0;    // the highest message sequence number accepted from its key
  std::string last_error;        // the last problem it reported ("" once it says it can work again)
  int64_t last_error_ms = 0;     // when (wall clock)
  // Rollout health reports of its that the fleet contradicted (unhealthy where its wave's gate held).
  int contradicting_reports = 0;
  std::string last_contradiction;
};

// The labels an agent's last hello listed (device groups); empty if its profile has none.
std::set<std::string> agent_labels(const AgentRecord& agent);

// Whether the agent's CPU has an INT8 dot product the fine-grained kernels need to be fast (x86-64:
// AVX2 or later; aarch64: the dot-product extension), from its last hello's ISA features. Devices
// without one (a Raspberry Pi 4's Cortex-A72) get a round's static package instead (kStaticClassLabel).
bool has_int8_dot_product(const AgentRecord& agent);

struct ModelRecord {
  int64_t id = 0;
  std::string sha256;  // of the package file
  std::string kind;    // "fp32" or "int8"
  std::string path;    // in the artifact store
  int64_t bytes = 0;
  std::string description;
  std::optional<int64_t> round_id;  // the round that produced it
  int64_t created_at_ms = 0;
};

struct RoundRecord {
  int64_t id = 0;
  int64_t model_id = 0;
  std::string config_json;
  RoundStage stage = RoundStage::kCollecting;  // see round.h
  std::string failure;
  std::optional<int64_t> result_model_id;
  std::optional<int64_t> baseline_model_id;
  std::string report_json;
  int64_t created_at_ms = 0;
  int64_t updated_at_ms = 0;
};

// A file for another runtime (gguf, imatrix, onnx, onnx-qdq, tensorrt-cache) made from a model: by a
// round (`round start --export`) or by `models export`. A round's export that could not be made has
// its error and no file.
struct ExportRecord {
  int64_t id = 0;
  int64_t model_id = 0;  // the model it was made from (a round's: its fleet package)
  std::optional<int64_t> round_id;
  std::string format;
  std::string path;  // in the artifact store; "" when it failed
  std::string sha256;
  int64_t bytes = 0;
  std::string error;
  int64_t created_at_ms = 0;
};

class Store {
 public:
  // Opens (creating) the SQLite database at `path` (ledger beside it); throws Error (kCorruption) if
  // quick_check finds damage. A database of an older version is backed up
  // (STATE/backups/...-pre-migration.db) before its schema changes.
  explicit Store(const std::string& path);
  // The store on an open connection (SQLite or PostgreSQL), creating or migrating its tables (on
  // PostgreSQL in one transaction), with its ledger at `ledger_path`.
  Store(std::unique_ptr<SqlConnection> database, std::string ledger_path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;
  SqlConnection& database() { return *db_; }
  // The backup taken before a migration at open ("" if none was needed).
  const std::string& migration_backup() const { return migration_backup_; }
  // What the ledger beside the database re-applied at open (revocations the database did not hold:
  // it was restored from an older backup), one line each.
  const std::vector<std::string>& ledger_notes() const { return ledger_notes_; }

  // Enrollment. The token is returned once; only its SHA-256 is stored.
  std::string create_token(int64_t valid_for_ms);
  // `count` tokens in one transaction (provisioning a fleet).
  std::vector<std::string> create_tokens(int count, int64_t valid_for_ms);
  // Registers `public_key` if `token` is unused and unexpired (and marks it used), in one IMMEDIATE
  // transaction; returns the agent id, or nullopt. A key enrolled before gets its old id back
  // unless revoked (then nullopt).
  std::optional<int64_t> redeem_token(const std::string& token, const std::string& public_key, const std::string& name);
  std::optional<AgentRecord> agent_by_key(const std::string& public_key);
  std::optional<AgentRecord> agent(int64_t id);
  std::vector<AgentRecord> agents();
  bool revoke_agent(int64_t id);
  // What a hello writes, in one statement (one commit; it was three): the time and hardware profile,
  // the key's message number (replay protection across restarts) and the package in its active slot.
  // Returns the agent's last problem as stored.
  std::string record_hello(int64_t id, int64_t at_ms, const std::string& profile_json, uint64_t sequence,
                           const std::string& active_model_sha);
  // Many agents' last-seen times in one transaction (heartbeats are flushed in batches).
  void agents_seen(const std::vector<std::pair<int64_t, int64_t>>& seen);
  // The highest accepted sequence number of agents' keys (replay protection across restarts),
  // in one transaction.
  void save_sequences(const std::vector<std::pair<std::string, uint64_t>>& sequences);  // (CURVE key, sequence)

  int64_t add_model(const ModelRecord& model);
  std::optional<ModelRecord> model(int64_t id);
  std::optional<ModelRecord> model_by_sha(const std::string& sha256);
  std::vector<ModelRecord> models();

  // Replaces an earlier record of the same model, round and format.
  int64_t add_export(const ExportRecord& record);
  std::vector<ExportRecord> exports(int64_t model_id);

  int64_t create_round(int64_t model_id, const std::string& config_json);
  // Whether round `id` was ever created here (its row may be gone with a restore of an older backup).
  bool round_id_issued(int64_t id) const { return id >= 1 && id < next_round_id_; }
  void set_round_stage(int64_t id, RoundStage stage, const std::string& failure = "");
  void set_round_models(int64_t id, std::optional<int64_t> result_model_id, std::optional<int64_t> baseline_model_id);
  void set_round_report(int64_t id, const std::string& report_json);
  std::optional<RoundRecord> round(int64_t id);
  std::vector<RoundRecord> rounds();

  // A round's per-agent writes - a participant joining, its status (`reason`: why it was dropped or
  // left, "" otherwise), its local report (JSON, so a restarted coordinator does not forget what was
  // reported) - are kept in memory, in order, and written in one transaction by flush_pending (the
  // daemon calls it at most every kCommitIntervalMs, and acknowledges what agents sent only after it),
  // and before anything that reads participants or changes a round's stage, so a committed stage always
  // has its participants' statuses: a round's per-agent writes cost a commit per interval, not one each
  // (10,000 agents x 4 stages were 40,000 fsyncs; joins and reports were one each more).
  void add_participant(int64_t round_id, int64_t agent_id, int index);
  void set_participant_status(int64_t round_id, int64_t agent_id, ParticipantStatus status, const std::string& reason = "");
  void save_participant_report(int64_t round_id, int64_t agent_id, const std::string& report_json);
  // set_agent_problem, written with them (a local report's problem: one commit per report was a
  // 2,000-agent round's 2,000 fsyncs where each check failed).
  void queue_agent_problem(int64_t agent_id, int64_t at_ms, const std::string& problem);
  void flush_pending();
  bool has_pending_writes() const { return !pending_writes_.empty(); }
  size_t pending_write_count() const { return pending_writes_.size(); }
  struct Participant {
    int64_t agent_id;
    int index;
    ParticipantStatus status;
    std::string reason;
    std::string report_json;  // "" until it reported
  };
  std::vector<Participant> participants(int64_t round_id);

  void save_aggregate(int64_t round_id, const std::string& stats_path, const std::string& stats_sha256, int agents,
                      int64_t sequences, int64_t tokens);
  std::optional<std::string> aggregate_path(int64_t round_id);
  // The rounds whose aggregate rows go beyond the newest `keep` of them (oldest first), with their
  // statistics files; forget_aggregate drops the row (the file is the caller's to delete).
  std::vector<std::pair<int64_t, std::string>> aggregates_beyond(int keep);
  void forget_aggregate(int64_t round_id);
  // Every file of the artifact store a row names: models, exports, round aggregates.
  std::set<std::string> artifact_paths();

  // The last problem an agent reported (no private text, disk full, ...); "" clears it.
  void set_agent_problem(int64_t agent_id, int64_t at_ms, const std::string& problem);
  // One more health report of the agent's that the fleet contradicted; `what` says which.
  void note_contradiction(int64_t agent_id, const std::string& what);

  // The package in an agent's active slot, as it last reported.
  void set_active_model(int64_t agent_id, const std::string& sha256);
  std::string active_model(int64_t agent_id);

  // Rollouts: settings, stage and a small JSON state (its wave), and a row per target agent; a
  // change saves the rollout's row and the rows of the targets that changed, in one transaction.
  struct RolloutRecord {
    int64_t id, model_id;
    std::string settings_json;
    RolloutStage stage;
    std::string reason, state_json;
  };
  struct RolloutTarget {
    int64_t agent_id;
    int wave;
    std::string status;       // rollout.h's TargetStatus names
    std::string package;      // "fleet" or its class's label
    std::string report_json;  // its last activation report; "" before one
  };
  int64_t create_rollout(int64_t model_id, const std::string& settings_json);
  void save_rollout(int64_t id, RolloutStage stage, const std::string& reason, const std::string& state_json,
                    const std::vector<RolloutTarget>& changed_targets);
  std::vector<RolloutRecord> rollouts();
  std::vector<RolloutTarget> rollout_targets(int64_t rollout_id);

  // The audit log keeps its newest `max_entries` rows (default 200,000) of each class; older ones
  // are deleted. Volume entries are the ones any agent or peer can cause at will (refusals, its error
  // reports); the others (enrollments, exclusions, rounds, rollouts, operator actions) are kept apart.
  void audit(const std::string& actor, const std::string& event, const std::string& detail);
  void audit_volume(const std::string& actor, const std::string& event, const std::string& detail);
  void set_audit_max_entries(int64_t max_entries);
  int64_t audit_entries();
  struct AuditEntry {
    int64_t at_ms;
    std::string actor, event, detail;
  };
  // The newest `limit` entries, newest first; only those of `actor` ("agent 7", "operator") if given.
  std::vector<AuditEntry> audit_log(int limit, const std::string& actor = "");

 private:
  static constexpr int kAuditTrimEvery = 256;  // inserts between trims
  void insert_audit(const std::string& actor, const std::string& event, const std::string& detail, bool volume);
  void trim_audit();

  std::unique_ptr<SqlConnection> db_;
  std::string migration_backup_;
  // The ledger (DATABASE.ledger, JSON): what a restore of an older backup must not undo - the next
  // round and rollout ids (never reused: agents and artifacts know them) and every revoked key.
  // Written atomically at every change, read at open.
  std::string ledger_path_;
  int64_t next_round_id_ = 1, next_rollout_id_ = 1, next_model_id_ = 1;
  std::set<std::string> revoked_keys_;
  std::vector<std::string> ledger_notes_;
  void save_ledger();
  // INSERT of a round or rollout row with the next id (at least `next_id`, which it advances).
  int64_t insert_with_next_id(const char* what, const char* table, const char* json_column, const char* stage, int64_t model_id,
                              const std::string& json, int64_t& next);
  // Sets `column` of many agents (keyed by `key_column`: id or public_key) in one transaction.
  void update_agents(const char* column, const char* key_column, const std::vector<std::pair<SqlValue, int64_t>>& values);
  // The next id of `table`: above its rows and at least `at_least` (inside the caller's transaction).
  int64_t next_id(const char* table, int64_t at_least);
  struct PendingWrite {
    enum class Kind { kJoined, kStatus, kReport, kProblem } kind;
    int64_t round_id, agent_id;                             // kProblem: round_id 0
    int index = 0;                                          // kJoined
    ParticipantStatus status = ParticipantStatus::kJoined;  // kStatus
    std::string text;                                       // kStatus: the reason; kReport: the report; kProblem: the problem
    int64_t at_ms = 0;                                      // kProblem: when the agent had it
  };
  std::vector<PendingWrite> pending_writes_;
  int64_t audit_max_entries_ = 200000;
  int audits_since_trim_ = 0;
};

}  // namespace fedcal::coordinator
