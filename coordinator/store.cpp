#include "coordinator/store.h"

#include <sqlite3.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <filesystem>

#include "common/clock.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/hex.h"
#include "common/random.h"
#include "common/sha256.h"
#include "coordinator/database_guard.h"

namespace fedcal::coordinator {
namespace {

// The schema; stages and statuses are limited to their enums' names (stages.h) by CHECK constraints.
// (A database created by an older version keeps its tables as they were: SQLite cannot add a CHECK.)
std::string schema() {
  return fmt::format(R"sql(
CREATE TABLE IF NOT EXISTS agents (
  id INTEGER PRIMARY KEY,
  public_key TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  enrolled_at_ms INTEGER NOT NULL,
  revoked_at_ms INTEGER,
  last_seen_ms INTEGER NOT NULL DEFAULT 0,
  profile_json TEXT NOT NULL DEFAULT '{{}}',
  active_model_sha TEXT NOT NULL DEFAULT '',
  last_sequence INTEGER NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  last_error_ms INTEGER NOT NULL DEFAULT 0,
  contradicting_reports INTEGER NOT NULL DEFAULT 0,
  last_contradiction TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS tokens (
  token_sha256 TEXT PRIMARY KEY,
  created_at_ms INTEGER NOT NULL,
  expires_at_ms INTEGER NOT NULL,
  used_by INTEGER REFERENCES agents(id)
);
CREATE TABLE IF NOT EXISTS models (
  id INTEGER PRIMARY KEY,
  sha256 TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL CHECK (kind IN ('fp32', 'int8')),
  path TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  description TEXT NOT NULL,
  round_id INTEGER REFERENCES rounds(id),
  created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rounds (
  id INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL REFERENCES models(id),
  config_json TEXT NOT NULL,
  stage TEXT NOT NULL CHECK (stage IN ({round_stages})),
  failure TEXT NOT NULL DEFAULT '',
  result_model_id INTEGER REFERENCES models(id),
  baseline_model_id INTEGER REFERENCES models(id),
  report_json TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS participants (
  round_id INTEGER NOT NULL REFERENCES rounds(id),
  agent_id INTEGER NOT NULL REFERENCES agents(id),
  idx INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'joined' CHECK (status IN ({participant_statuses})),
  reason TEXT NOT NULL DEFAULT '',
  report_json TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (round_id, agent_id)
);
CREATE TABLE IF NOT EXISTS aggregates (
  round_id INTEGER PRIMARY KEY REFERENCES rounds(id),
  stats_path TEXT NOT NULL,
  stats_sha256 TEXT NOT NULL,
  agents INTEGER NOT NULL,
  sequences INTEGER NOT NULL,
  tokens INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS rollouts (
  id INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL REFERENCES models(id),
  settings_json TEXT NOT NULL,
  stage TEXT NOT NULL CHECK (stage IN ({rollout_stages})),
  reason TEXT NOT NULL DEFAULT '',
  state_json TEXT NOT NULL DEFAULT '{{}}',
  created_at_ms INTEGER NOT NULL,
  updated_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS exports (
  id INTEGER PRIMARY KEY,
  model_id INTEGER NOT NULL REFERENCES models(id),
  round_id INTEGER REFERENCES rounds(id),
  format TEXT NOT NULL,
  path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  bytes INTEGER NOT NULL,
  error TEXT NOT NULL DEFAULT '',
  created_at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS audit (
  id INTEGER PRIMARY KEY,
  at_ms INTEGER NOT NULL,
  actor TEXT NOT NULL,
  event TEXT NOT NULL,
  detail TEXT NOT NULL,
  volume INTEGER NOT NULL DEFAULT 0
);
)sql",
                     fmt::arg("round_stages", sql_names<RoundStage>()),
                     fmt::arg("participant_statuses", sql_names<ParticipantStatus>()),
                     fmt::arg("rollout_stages", sql_names<RolloutStage>()));
}

// Runs one statement group of the store; an SQLite failure becomes Error with its kind (a full or
// failing disk: kIo; a damaged database: kCorruption; anything else: kInternal), naming what failed.
ErrorKind error_kind(const SQLite::Exception& error) {
  const int code = error.getErrorCode() & 0xff;
  return code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? ErrorKind::kCorruption
         : code == SQLITE_FULL || code == SQLITE_IOERR || code == SQLITE_CANTOPEN || code == SQLITE_READONLY
             ? ErrorKind::kIo
             : ErrorKind::kInternal;
}

template <typename Body>
auto sqlite_call(const char* what, Body&& body) -> decltype(body()) {
  try {
    return body();
  } catch (const SQLite::Exception& error) {
    throw Error(fmt::format("coordinator database: {}: {}", what, error.what()), error_kind(error));
  }
}

std::string token_hash(const std::string& token) { return sha256_hex(std::as_bytes(std::span(token.data(), token.size()))); }

AgentRecord read_agent(SQLite::Statement& query) {
  AgentRecord agent;
  agent.id = query.getColumn(0).getInt64();
  agent.public_key = query.getColumn(1).getString();
  agent.name = query.getColumn(2).getString();
  agent.enrolled_at_ms = query.getColumn(3).getInt64();
  if (!query.getColumn(4).isNull()) agent.revoked_at_ms = query.getColumn(4).getInt64();
  agent.last_seen_ms = query.getColumn(5).getInt64();
  agent.profile_json = query.getColumn(6).getString();
  agent.active_model_sha = query.getColumn(7).getString();
  agent.last_sequence = static_cast<uint64_t>(query.getColumn(8).getInt64());
  agent.last_error = query.getColumn(9).getString();
  agent.last_error_ms = query.getColumn(10).getInt64();
  agent.contradicting_reports = query.getColumn(11).getInt();
  agent.last_contradiction = query.getColumn(12).getString();
  return agent;
}
constexpr const char* kAgentColumns =
    "SELECT id, public_key, name, enrolled_at_ms, revoked_at_ms, last_seen_ms, profile_json, active_model_sha, last_sequence, "
    "last_error, last_error_ms, contradicting_reports, last_contradiction FROM agents";

ModelRecord read_model(SQLite::Statement& query) {
  ModelRecord model;
  model.id = query.getColumn(0).getInt64();
  model.sha256 = query.getColumn(1).getString();
  model.kind = query.getColumn(2).getString();
  model.path = query.getColumn(3).getString();
  model.bytes = query.getColumn(4).getInt64();
  model.description = query.getColumn(5).getString();
  if (!query.getColumn(6).isNull()) model.round_id = query.getColumn(6).getInt64();
  model.created_at_ms = query.getColumn(7).getInt64();
  return model;
}
constexpr const char* kModelColumns = "SELECT id, sha256, kind, path, bytes, description, round_id, created_at_ms FROM models";

RoundRecord read_round(SQLite::Statement& query) {
  RoundRecord round;
  round.id = query.getColumn(0).getInt64();
  round.model_id = query.getColumn(1).getInt64();
  round.config_json = query.getColumn(2).getString();
  round.stage = with_context([&] { return fmt::format("round {}", round.id); },
                             [&] { return parse_round_stage(query.getColumn(3).getString()); });
  round.failure = query.getColumn(4).getString();
  if (!query.getColumn(5).isNull()) round.result_model_id = query.getColumn(5).getInt64();
  if (!query.getColumn(6).isNull()) round.baseline_model_id = query.getColumn(6).getInt64();
  round.report_json = query.getColumn(7).getString();
  round.created_at_ms = query.getColumn(8).getInt64();
  round.updated_at_ms = query.getColumn(9).getInt64();
  return round;
}
constexpr const char* kRoundColumns =
    "SELECT id, model_id, config_json, stage, failure, result_model_id, baseline_model_id, report_json, created_at_ms, "
    "updated_at_ms "
    "FROM rounds";

void bind_optional(SQLite::Statement& statement, int index, std::optional<int64_t> value) {
  if (value)
    statement.bind(index, *value);
  else
    statement.bind(index);
}

}  // namespace

std::set<std::string> agent_labels(const AgentRecord& agent) {
  std::set<std::string> labels;
  const nlohmann::json profile = nlohmann::json::parse(agent.profile_json, nullptr, false);
  if (!profile.is_object()) return labels;
  const auto list = profile.find("labels");
  if (list == profile.end() || !list->is_array()) return labels;
  for (const auto& label : *list) {
    if (label.is_string()) labels.insert(label.get<std::string>());
  }
  return labels;
}

bool has_int8_dot_product(const AgentRecord& agent) {
  const nlohmann::json profile = nlohmann::json::parse(agent.profile_json, nullptr, false);
  if (!profile.is_object()) return true;  // nothing known: the default package
  const std::string arch = profile.value("arch", std::string());
  const auto features = profile.find("isa_features");
  const auto has = [&](const char* feature) {
    if (features == profile.end() || !features->is_array()) return false;
    return std::any_of(features->begin(), features->end(),
                       [&](const nlohmann::json& f) { return f.is_string() && f == feature; });
  };
  if (arch == "x86_64" || arch == "amd64") return has("avx2");
  if (arch == "aarch64" || arch == "arm64" || arch.rfind("armv", 0) == 0) return has("dotprod");
  return true;  // another architecture: the portable kernels either way
}

int64_t now_ms() { return wall_ms(); }

Store::Store(const std::string& path)
    : db_(with_context([&] { return "opening the coordinator database " + path; },
                       [&] {
                         try {
                           return SQLite::Database(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
                         } catch (const SQLite::Exception& e) {
                           throw Error(e.what());
                         }
                       })) {
  try {
    db_.setBusyTimeout(5000);
    db_.exec("PRAGMA journal_mode=WAL");
    db_.exec("PRAGMA synchronous=FULL");
    db_.exec("PRAGMA foreign_keys=ON");
    // Damage found now is said now, not discovered by the first query that touches it.
    const std::string findings = database_findings(db_, "quick_check");
    if (!findings.empty()) {
      fail_as(ErrorKind::kCorruption, "{}: the database is damaged (quick_check: {}); restore it from a backup (docs/DURABILITY.md)",
              path, findings);
    }
    // Columns added after the first release (a database of an older version gets them here, after
    // a backup of it as it was).
    // clang-format off
    const std::pair<const char*, const char*> added[] = {
        {"agents", "last_sequence INTEGER NOT NULL DEFAULT 0"},
        {"agents", "last_error TEXT NOT NULL DEFAULT ''"},
        {"agents", "last_error_ms INTEGER NOT NULL DEFAULT 0"},
        {"agents", "contradicting_reports INTEGER NOT NULL DEFAULT 0"},
        {"agents", "last_contradiction TEXT NOT NULL DEFAULT ''"},
        {"audit", "volume INTEGER NOT NULL DEFAULT 0"},
        {"participants", "reason TEXT NOT NULL DEFAULT ''"},
        {"participants", "report_json TEXT NOT NULL DEFAULT ''"},
    };
    // clang-format on
    std::vector<std::string> migrations;
    for (const auto& [table, column] : added) {
      const std::string column_name = std::string(column).substr(0, std::string(column).find(' '));
      SQLite::Statement exists(db_, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?");
      exists.bind(1, table);
      if (!exists.executeStep() || exists.getColumn(0).getInt() == 0) continue;  // a new database: the schema has it
      SQLite::Statement columns(db_, fmt::format("SELECT count(*) FROM pragma_table_info('{}') WHERE name = ?", table));
      columns.bind(1, column_name);
      if (columns.executeStep() && columns.getColumn(0).getInt() == 0)
        migrations.push_back(fmt::format("ALTER TABLE {} ADD COLUMN {}", table, column));
    }
    if (!migrations.empty()) {
      const std::string state_dir = std::filesystem::path(path).parent_path().string();
      const std::string backup = backup_path(state_dir, "pre-migration");
      backup_database(path, backup);
      migration_backup_ = backup;
    }
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    db_.exec(schema());
    for (const std::string& migration : migrations) db_.exec(migration);
    db_.exec("CREATE INDEX IF NOT EXISTS audit_by_volume ON audit (volume, id)");
    transaction.commit();
    // The ledger: ids and revocations from after the backup this database may have been restored from.
    ledger_path_ = path + ".ledger";
    if (std::filesystem::exists(ledger_path_)) {
      const nlohmann::json ledger = nlohmann::json::parse(read_text_file(ledger_path_), nullptr, false);
      if (!ledger.is_object())
        fail_as(ErrorKind::kCorruption, "{}: not a JSON object (the ledger of ids and revocations; its last good copy is gone)",
                ledger_path_);
      next_round_id_ = ledger.value("next_round_id", int64_t{1});
      next_rollout_id_ = ledger.value("next_rollout_id", int64_t{1});
      next_model_id_ = ledger.value("next_model_id", int64_t{1});
      revoked_keys_ = ledger.value("revoked_keys", std::set<std::string>{});
    }
    for (const std::string& key : revoked_keys_) {
      SQLite::Statement update(db_, "UPDATE agents SET revoked_at_ms = ? WHERE public_key = ? AND revoked_at_ms IS NULL");
      update.bind(1, now_ms());
      update.bind(2, key);
      if (update.exec() == 1)
        ledger_notes_.push_back(
            fmt::format("agent key {}... was revoked after this database's backup was taken: revoked again", key.substr(0, 8)));
    }
  } catch (const SQLite::Exception& e) {
    // Damage the quick check did not reach (e.g. in the schema's own pages) is still damage.
    if (error_kind(e) == ErrorKind::kCorruption)
      fail_as(ErrorKind::kCorruption, "{}: the database is damaged ({}); restore it from a backup (docs/DURABILITY.md)", path, e.what());
    fail_as(ErrorKind::kIo, "{}: {}", path, e.what());
  }
}

std::string Store::create_token(int64_t valid_for_ms) {
  return sqlite_call("create token", [&]() -> std::string {
    Key32 random = random_key();
    const std::string token = to_hex(std::as_bytes(std::span(random)));
    SQLite::Statement insert(db_, "INSERT INTO tokens (token_sha256, created_at_ms, expires_at_ms) VALUES (?, ?, ?)");
    insert.bind(1, token_hash(token));
    insert.bind(2, now_ms());
    insert.bind(3, now_ms() + valid_for_ms);
    insert.exec();
    return token;
  });
}

std::optional<int64_t> Store::redeem_token(const std::string& token, const std::string& public_key, const std::string& name) {
  return sqlite_call("redeem token", [&]() -> std::optional<int64_t> {
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement find(db_, "SELECT expires_at_ms, used_by FROM tokens WHERE token_sha256 = ?");
    find.bind(1, token_hash(token));
    if (!find.executeStep() || !find.getColumn(1).isNull() || find.getColumn(0).getInt64() < now_ms()) return std::nullopt;
    if (revoked_keys_.count(public_key)) return std::nullopt;  // revoked, also when the database forgot it (a restore)
    int64_t id;
    if (auto existing = agent_by_key(public_key)) {
      if (existing->revoked_at_ms) return std::nullopt;
      id = existing->id;
    } else {
      SQLite::Statement insert(db_, "INSERT INTO agents (public_key, name, enrolled_at_ms) VALUES (?, ?, ?)");
      insert.bind(1, public_key);
      insert.bind(2, name);
      insert.bind(3, now_ms());
      insert.exec();
      id = db_.getLastInsertRowid();
    }
    SQLite::Statement use(db_, "UPDATE tokens SET used_by = ? WHERE token_sha256 = ?");
    use.bind(1, id);
    use.bind(2, token_hash(token));
    use.exec();
    transaction.commit();
    return id;
  });
}

std::optional<AgentRecord> Store::agent_by_key(const std::string& public_key) {
  return sqlite_call("agent by key", [&]() -> std::optional<AgentRecord> {
    SQLite::Statement query(db_, std::string(kAgentColumns) + " WHERE public_key = ?");
    query.bind(1, public_key);
    if (!query.executeStep()) return std::nullopt;
    return read_agent(query);
  });
}

std::optional<AgentRecord> Store::agent(int64_t id) {
  return sqlite_call("agent", [&]() -> std::optional<AgentRecord> {
    SQLite::Statement query(db_, std::string(kAgentColumns) + " WHERE id = ?");
    query.bind(1, id);
    if (!query.executeStep()) return std::nullopt;
    return read_agent(query);
  });
}

std::vector<AgentRecord> Store::agents() {
  return sqlite_call("agents", [&]() -> std::vector<AgentRecord> {
    SQLite::Statement query(db_, std::string(kAgentColumns) + " ORDER BY id");
    std::vector<AgentRecord> out;
    while (query.executeStep()) out.push_back(read_agent(query));
    return out;
  });
}

bool Store::revoke_agent(int64_t id) {
  const bool revoked = sqlite_call("revoke agent", [&]() -> bool {
    SQLite::Statement update(db_, "UPDATE agents SET revoked_at_ms = ? WHERE id = ? AND revoked_at_ms IS NULL");
    update.bind(1, now_ms());
    update.bind(2, id);
    return update.exec() == 1;
  });
  // Kept in the ledger too: a restore of an older backup does not bring the key back.
  if (const auto agent = revoked ? this->agent(id) : std::nullopt) {
    revoked_keys_.insert(agent->public_key);
    save_ledger();
  }
  return revoked;
}

void Store::agent_seen(int64_t id, int64_t at_ms, const std::string* profile_json) {
  return sqlite_call("agent seen", [&]() -> void {
    SQLite::Statement update(db_, profile_json ? "UPDATE agents SET last_seen_ms = ?, profile_json = ? WHERE id = ?"
                                               : "UPDATE agents SET last_seen_ms = ? WHERE id = ?");
    update.bind(1, at_ms);
    if (profile_json) {
      update.bind(2, *profile_json);
      update.bind(3, id);
    } else {
      update.bind(2, id);
    }
    update.exec();
  });
}

void Store::agents_seen(const std::vector<std::pair<int64_t, int64_t>>& seen) {
  return sqlite_call("agents seen", [&]() -> void {
    if (seen.empty()) return;
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement update(db_, "UPDATE agents SET last_seen_ms = ? WHERE id = ?");
    for (const auto& [id, at_ms] : seen) {
      update.bind(1, at_ms);
      update.bind(2, id);
      update.exec();
      update.reset();
    }
    transaction.commit();
  });
}

void Store::save_sequences(const std::vector<std::pair<std::string, uint64_t>>& sequences) {
  return sqlite_call("save sequence numbers", [&]() -> void {
    if (sequences.empty()) return;
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement update(db_, "UPDATE agents SET last_sequence = ? WHERE public_key = ?");
    for (const auto& [key, sequence] : sequences) {
      update.bind(1, static_cast<int64_t>(sequence));  // below 2^63: the server refuses larger ones
      update.bind(2, key);
      update.exec();
      update.reset();
    }
    transaction.commit();
  });
}

int64_t Store::add_model(const ModelRecord& model) {
  return sqlite_call("add model", [&]() -> int64_t {
    if (auto existing = model_by_sha(model.sha256)) return existing->id;
    // Never an id used before, also after a restore of an older backup (the ledger remembers).
    SQLite::Statement insert(db_,
                             "INSERT INTO models (id, sha256, kind, path, bytes, description, round_id, created_at_ms) "
                             "VALUES (MAX(?, (SELECT IFNULL(MAX(id), 0) + 1 FROM models)), ?, ?, ?, ?, ?, ?, ?)");
    insert.bind(1, next_model_id_);
    insert.bind(2, model.sha256);
    insert.bind(3, model.kind);
    insert.bind(4, model.path);
    insert.bind(5, model.bytes);
    insert.bind(6, model.description);
    bind_optional(insert, 7, model.round_id);
    insert.bind(8, now_ms());
    insert.exec();
    const int64_t id = db_.getLastInsertRowid();
    next_model_id_ = id + 1;
    save_ledger();
    return id;
  });
}

std::optional<ModelRecord> Store::model(int64_t id) {
  return sqlite_call("model", [&]() -> std::optional<ModelRecord> {
    SQLite::Statement query(db_, std::string(kModelColumns) + " WHERE id = ?");
    query.bind(1, id);
    if (!query.executeStep()) return std::nullopt;
    return read_model(query);
  });
}

std::optional<ModelRecord> Store::model_by_sha(const std::string& sha256) {
  return sqlite_call("model by sha", [&]() -> std::optional<ModelRecord> {
    SQLite::Statement query(db_, std::string(kModelColumns) + " WHERE sha256 = ?");
    query.bind(1, sha256);
    if (!query.executeStep()) return std::nullopt;
    return read_model(query);
  });
}

std::vector<ModelRecord> Store::models() {
  return sqlite_call("models", [&]() -> std::vector<ModelRecord> {
    SQLite::Statement query(db_, std::string(kModelColumns) + " ORDER BY id");
    std::vector<ModelRecord> out;
    while (query.executeStep()) out.push_back(read_model(query));
    return out;
  });
}

int64_t Store::add_export(const ExportRecord& record) {
  return sqlite_call("add export", [&]() -> int64_t {
    // A round's job re-run after a restart replaces what it recorded before.
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement replace(db_, "DELETE FROM exports WHERE model_id = ? AND round_id IS ? AND format = ?");
    replace.bind(1, record.model_id);
    bind_optional(replace, 2, record.round_id);
    replace.bind(3, record.format);
    replace.exec();
    SQLite::Statement insert(
        db_, "INSERT INTO exports (model_id, round_id, format, path, sha256, bytes, error, created_at_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)");
    insert.bind(1, record.model_id);
    bind_optional(insert, 2, record.round_id);
    insert.bind(3, record.format);
    insert.bind(4, record.path);
    insert.bind(5, record.sha256);
    insert.bind(6, record.bytes);
    insert.bind(7, record.error);
    insert.bind(8, now_ms());
    insert.exec();
    const int64_t id = db_.getLastInsertRowid();
    transaction.commit();
    return id;
  });
}

std::vector<ExportRecord> Store::exports(int64_t model_id) {
  return sqlite_call("exports", [&]() -> std::vector<ExportRecord> {
    SQLite::Statement query(
        db_, "SELECT id, model_id, round_id, format, path, sha256, bytes, error, created_at_ms FROM exports WHERE model_id = ? ORDER BY id");
    query.bind(1, model_id);
    std::vector<ExportRecord> out;
    while (query.executeStep()) {
      ExportRecord record;
      record.id = query.getColumn(0).getInt64();
      record.model_id = query.getColumn(1).getInt64();
      if (!query.getColumn(2).isNull()) record.round_id = query.getColumn(2).getInt64();
      record.format = query.getColumn(3).getString();
      record.path = query.getColumn(4).getString();
      record.sha256 = query.getColumn(5).getString();
      record.bytes = query.getColumn(6).getInt64();
      record.error = query.getColumn(7).getString();
      record.created_at_ms = query.getColumn(8).getInt64();
      out.push_back(std::move(record));
    }
    return out;
  });
}

void Store::save_ledger() {
  const nlohmann::json ledger = {{"next_round_id", next_round_id_},
                                 {"next_rollout_id", next_rollout_id_},
                                 {"next_model_id", next_model_id_},
                                 {"revoked_keys", revoked_keys_}};
  with_context([&] { return "writing " + ledger_path_; },
               [&] { write_file_atomically(ledger_path_, ledger.dump(1) + "\n", 0600); });
}

int64_t Store::insert_with_next_id(const char* what, const char* table, const char* json_column, const char* stage,
                                   int64_t model_id, const std::string& json, int64_t& next_id) {
  const int64_t id = sqlite_call(what, [&]() -> int64_t {
    // Never an id used before, also after a restore of an older backup (the ledger remembers).
    SQLite::Statement insert(db_, fmt::format("INSERT INTO {0} (id, model_id, {1}, stage, created_at_ms, updated_at_ms) "
                                              "VALUES (MAX(?, (SELECT IFNULL(MAX(id), 0) + 1 FROM {0})), ?, ?, '{2}', ?, ?)",
                                              table, json_column, stage));
    insert.bind(1, next_id);
    insert.bind(2, model_id);
    insert.bind(3, json);
    insert.bind(4, now_ms());
    insert.bind(5, now_ms());
    insert.exec();
    return db_.getLastInsertRowid();
  });
  next_id = id + 1;
  save_ledger();
  return id;
}

int64_t Store::create_round(int64_t model_id, const std::string& config_json) {
  return insert_with_next_id("create round", "rounds", "config_json", "collecting", model_id, config_json, next_round_id_);
}

void Store::set_round_stage(int64_t id, RoundStage stage, const std::string& failure) {
  return sqlite_call("set round stage", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE rounds SET stage = ?, failure = ?, updated_at_ms = ? WHERE id = ?");
    update.bind(1, std::string(name(stage)));
    update.bind(2, failure);
    update.bind(3, now_ms());
    update.bind(4, id);
    update.exec();
  });
}

void Store::set_round_models(int64_t id, std::optional<int64_t> result_model_id, std::optional<int64_t> baseline_model_id) {
  return sqlite_call("set round models", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE rounds SET result_model_id = ?, baseline_model_id = ?, updated_at_ms = ? WHERE id = ?");
    bind_optional(update, 1, result_model_id);
    bind_optional(update, 2, baseline_model_id);
    update.bind(3, now_ms());
    update.bind(4, id);
    update.exec();
  });
}

void Store::set_round_report(int64_t id, const std::string& report_json) {
  return sqlite_call("set round report", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE rounds SET report_json = ?, updated_at_ms = ? WHERE id = ?");
    update.bind(1, report_json);
    update.bind(2, now_ms());
    update.bind(3, id);
    update.exec();
  });
}

std::optional<RoundRecord> Store::round(int64_t id) {
  return sqlite_call("round", [&]() -> std::optional<RoundRecord> {
    SQLite::Statement query(db_, std::string(kRoundColumns) + " WHERE id = ?");
    query.bind(1, id);
    if (!query.executeStep()) return std::nullopt;
    return read_round(query);
  });
}

std::vector<RoundRecord> Store::rounds() {
  return sqlite_call("rounds", [&]() -> std::vector<RoundRecord> {
    SQLite::Statement query(db_, std::string(kRoundColumns) + " ORDER BY id");
    std::vector<RoundRecord> out;
    while (query.executeStep()) out.push_back(read_round(query));
    return out;
  });
}

void Store::add_participant(int64_t round_id, int64_t agent_id, int index) {
  return sqlite_call("add participant", [&]() -> void {
    SQLite::Statement insert(db_, "INSERT OR REPLACE INTO participants (round_id, agent_id, idx) VALUES (?, ?, ?)");
    insert.bind(1, round_id);
    insert.bind(2, agent_id);
    insert.bind(3, index);
    insert.exec();
  });
}

void Store::set_participant_status(int64_t round_id, int64_t agent_id, ParticipantStatus status, const std::string& reason) {
  return sqlite_call("set participant status", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE participants SET status = ?, reason = ? WHERE round_id = ? AND agent_id = ?");
    update.bind(1, std::string(name(status)));
    update.bind(2, reason);
    update.bind(3, round_id);
    update.bind(4, agent_id);
    update.exec();
  });
}

void Store::save_participant_report(int64_t round_id, int64_t agent_id, const std::string& report_json) {
  return sqlite_call("save participant report", [&]() -> void {
    SQLite::Statement update(db_,
                             "UPDATE participants SET status = 'reported', report_json = ? WHERE round_id = ? AND agent_id = ?");
    update.bind(1, report_json);
    update.bind(2, round_id);
    update.bind(3, agent_id);
    update.exec();
  });
}

std::vector<Store::Participant> Store::participants(int64_t round_id) {
  return sqlite_call("participants", [&]() -> std::vector<Store::Participant> {
    SQLite::Statement query(db_,
                            "SELECT agent_id, idx, status, reason, report_json FROM participants WHERE round_id = ? ORDER BY idx");
    query.bind(1, round_id);
    std::vector<Participant> out;
    while (query.executeStep())
      out.push_back({query.getColumn(0).getInt64(), query.getColumn(1).getInt(),
                     parse_participant_status(query.getColumn(2).getString()), query.getColumn(3).getString(),
                     query.getColumn(4).getString()});
    return out;
  });
}

void Store::set_agent_problem(int64_t agent_id, int64_t at_ms, const std::string& problem) {
  return sqlite_call("set agent problem", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE agents SET last_error = ?, last_error_ms = ? WHERE id = ?");
    update.bind(1, problem);
    update.bind(2, at_ms);
    update.bind(3, agent_id);
    update.exec();
  });
}

void Store::note_contradiction(int64_t agent_id, const std::string& what) {
  return sqlite_call("note contradiction", [&]() -> void {
    SQLite::Statement update(
        db_, "UPDATE agents SET contradicting_reports = contradicting_reports + 1, last_contradiction = ? WHERE id = ?");
    update.bind(1, what);
    update.bind(2, agent_id);
    update.exec();
  });
}

void Store::save_aggregate(int64_t round_id, const std::string& stats_path, const std::string& stats_sha256, int agents,
                           int64_t sequences, int64_t tokens) {
  return sqlite_call("save aggregate", [&]() -> void {
    SQLite::Transaction transaction(db_, SQLite::TransactionBehavior::IMMEDIATE);
    SQLite::Statement insert(db_, "INSERT OR REPLACE INTO aggregates VALUES (?, ?, ?, ?, ?, ?)");
    insert.bind(1, round_id);
    insert.bind(2, stats_path);
    insert.bind(3, stats_sha256);
    insert.bind(4, agents);
    insert.bind(5, sequences);
    insert.bind(6, tokens);
    insert.exec();
    set_round_stage(round_id, RoundStage::kQuantizing);
    transaction.commit();
  });
}

std::optional<std::string> Store::aggregate_path(int64_t round_id) {
  return sqlite_call("aggregate path", [&]() -> std::optional<std::string> {
    SQLite::Statement query(db_, "SELECT stats_path FROM aggregates WHERE round_id = ?");
    query.bind(1, round_id);
    if (!query.executeStep()) return std::nullopt;
    return query.getColumn(0).getString();
  });
}

std::vector<std::pair<int64_t, std::string>> Store::aggregates_beyond(int keep) {
  return sqlite_call("old aggregates", [&] {
    std::vector<std::pair<int64_t, std::string>> out;
    SQLite::Statement query(db_, "SELECT round_id, stats_path FROM aggregates ORDER BY round_id DESC LIMIT -1 OFFSET ?");
    query.bind(1, keep);
    while (query.executeStep()) out.emplace_back(query.getColumn(0).getInt64(), query.getColumn(1).getString());
    std::reverse(out.begin(), out.end());
    return out;
  });
}

void Store::forget_aggregate(int64_t round_id) {
  sqlite_call("forget aggregate", [&] {
    SQLite::Statement statement(db_, "DELETE FROM aggregates WHERE round_id = ?");
    statement.bind(1, round_id);
    statement.exec();
  });
}

std::set<std::string> Store::artifact_paths() {
  return sqlite_call("artifact paths", [&] {
    std::set<std::string> paths;
    SQLite::Statement query(db_,
                            "SELECT path FROM models UNION SELECT path FROM exports UNION SELECT stats_path FROM aggregates");
    while (query.executeStep()) paths.insert(query.getColumn(0).getString());
    return paths;
  });
}

void Store::set_active_model(int64_t agent_id, const std::string& sha256) {
  return sqlite_call("set active model", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE agents SET active_model_sha = ? WHERE id = ?");
    update.bind(1, sha256);
    update.bind(2, agent_id);
    update.exec();
  });
}

std::string Store::active_model(int64_t agent_id) {
  return sqlite_call("active model", [&]() -> std::string {
    SQLite::Statement query(db_, "SELECT active_model_sha FROM agents WHERE id = ?");
    query.bind(1, agent_id);
    return query.executeStep() ? query.getColumn(0).getString() : std::string();
  });
}

int64_t Store::create_rollout(int64_t model_id, const std::string& settings_json) {
  return insert_with_next_id("create rollout", "rollouts", "settings_json", "running", model_id, settings_json, next_rollout_id_);
}

void Store::save_rollout(int64_t id, RolloutStage stage, const std::string& reason, const std::string& state_json) {
  return sqlite_call("save rollout", [&]() -> void {
    SQLite::Statement update(db_, "UPDATE rollouts SET stage = ?, reason = ?, state_json = ?, updated_at_ms = ? WHERE id = ?");
    update.bind(1, std::string(name(stage)));
    update.bind(2, reason);
    update.bind(3, state_json);
    update.bind(4, now_ms());
    update.bind(5, id);
    update.exec();
  });
}

std::vector<Store::RolloutRecord> Store::rollouts() {
  return sqlite_call("rollouts", [&]() -> std::vector<Store::RolloutRecord> {
    SQLite::Statement query(db_, "SELECT id, model_id, settings_json, stage, reason, state_json FROM rollouts ORDER BY id");
    std::vector<RolloutRecord> out;
    while (query.executeStep()) {
      out.push_back({query.getColumn(0).getInt64(), query.getColumn(1).getInt64(), query.getColumn(2).getString(),
                     parse_rollout_stage(query.getColumn(3).getString()), query.getColumn(4).getString(),
                     query.getColumn(5).getString()});
    }
    return out;
  });
}

void Store::audit(const std::string& actor, const std::string& event, const std::string& detail) {
  insert_audit(actor, event, detail, false);
}

void Store::audit_volume(const std::string& actor, const std::string& event, const std::string& detail) {
  insert_audit(actor, event, detail, true);
}

void Store::insert_audit(const std::string& actor, const std::string& event, const std::string& detail, bool volume) {
  return sqlite_call("audit", [&]() -> void {
    SQLite::Statement insert(db_, "INSERT INTO audit (at_ms, actor, event, detail, volume) VALUES (?, ?, ?, ?, ?)");
    insert.bind(1, now_ms());
    insert.bind(2, actor);
    insert.bind(3, event);
    insert.bind(4, detail);
    insert.bind(5, volume ? 1 : 0);
    insert.exec();
    if (++audits_since_trim_ >= kAuditTrimEvery) trim_audit();
  });
}

void Store::set_audit_max_entries(int64_t max_entries) {
  audit_max_entries_ = max_entries;
  sqlite_call("audit trim", [&] { trim_audit(); });
}

void Store::trim_audit() {
  audits_since_trim_ = 0;
  // Each class keeps its newest `audit_max_entries_` rows: a flood of volume entries never pushes out
  // the others (enrollments, exclusions, operator actions).
  for (const int volume : {0, 1}) {
    SQLite::Statement trim(db_,
                           "DELETE FROM audit WHERE volume = ?1 AND id < (SELECT id FROM audit WHERE volume = ?1 ORDER BY id DESC "
                           "LIMIT 1 OFFSET ?2)");
    trim.bind(1, volume);
    trim.bind(2, audit_max_entries_ - 1);
    trim.exec();
  }
}

int64_t Store::audit_entries() {
  return sqlite_call("audit count", [&] { return db_.execAndGet("SELECT COUNT(*) FROM audit").getInt64(); });
}

std::vector<Store::AuditEntry> Store::audit_log(int limit, const std::string& actor) {
  return sqlite_call("audit log", [&]() -> std::vector<Store::AuditEntry> {
    SQLite::Statement query(db_, actor.empty() ? "SELECT at_ms, actor, event, detail FROM audit ORDER BY id DESC LIMIT ?"
                                               : "SELECT at_ms, actor, event, detail FROM audit WHERE actor = ? ORDER BY id DESC LIMIT ?");
    if (actor.empty()) {
      query.bind(1, limit);
    } else {
      query.bind(1, actor);
      query.bind(2, limit);
    }
    std::vector<AuditEntry> out;
    while (query.executeStep()) {
      out.push_back({query.getColumn(0).getInt64(), query.getColumn(1).getString(), query.getColumn(2).getString(),
                     query.getColumn(3).getString()});
    }
    return out;
  });
}

}  // namespace fedcal::coordinator
