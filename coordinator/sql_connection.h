// One connection to the coordinator's SQL database, whichever engine holds it: SQLite (a file in the
// state folder, the default) or PostgreSQL (database_url in the config, for fleets past one machine).
// The store (store.h) writes its SQL once against this: `?` placeholders, INSERT ... RETURNING,
// ON CONFLICT upserts and IS NOT DISTINCT FROM, which both engines read alike; the few differences
// (the schema's column types, table introspection, backups) are each backend's.
//
// Statements are prepared once per connection and kept (a heartbeat's lookup is not re-parsed).
// Every failure throws Error naming the database and what failed, with its kind: kIo where the disk
// or the server connection failed, kCorruption where the database is damaged, kInternal otherwise.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <variant>
#include <vector>

namespace fedcal::coordinator {

enum class SqlDialect { kSqlite, kPostgres };

// A parameter or a column value. PostgreSQL returns every column as text; int64() parses it.
using SqlValue = std::variant<std::monostate, int64_t, std::string>;

class SqlRow {
 public:
  explicit SqlRow(std::vector<SqlValue> values) : values_(std::move(values)) {}
  bool is_null(size_t column) const;
  int64_t int64(size_t column) const;  // throws Error (kInternal) on text that is no integer
  std::string text(size_t column) const;
  std::optional<int64_t> optional_int64(size_t column) const;

 private:
  std::vector<SqlValue> values_;
};
using SqlRows = std::vector<SqlRow>;

class SqlConnection {
 public:
  virtual ~SqlConnection() = default;
  virtual SqlDialect dialect() const = 0;
  // What error messages name: the file, or the PostgreSQL database (no password).
  virtual const std::string& name() const = 0;

  // Several statements without parameters (the schema).
  virtual void run_script(const std::string& sql) = 0;
  virtual SqlRows query(const std::string& sql, const std::vector<SqlValue>& parameters = {}) = 0;
  // Returns the rows the statement changed.
  virtual int64_t execute(const std::string& sql, const std::vector<SqlValue>& parameters = {}) = 0;

  // One transaction at a time (SqlTransaction); SQLite's takes the write lock at once (IMMEDIATE).
  virtual void begin() = 0;
  virtual void commit() = 0;
  virtual void rollback() noexcept = 0;

  virtual bool has_table(const std::string& table) = 0;
  virtual bool has_column(const std::string& table, const std::string& column) = 0;

  // The lead among coordinators sharing this database: a session-level lock of this connection
  // (PostgreSQL's advisory lock `key`), held until the connection ends. True if this connection holds
  // it now. A SQLite database has one coordinator (the state folder's lock): always true.
  virtual bool try_lead(int64_t key) = 0;
  // False once the connection to the server broke. A PostgreSQL connection is never reopened behind
  // the caller's back: the lead went with the old session, so a deposed leader cannot write.
  virtual bool connected() const = 0;

  // Statements run on this connection so far (scale benchmarks count them per heartbeat), and the
  // commits they made durable (a transaction's, or a statement's own outside one: on SQLite with
  // synchronous=FULL each is an fsync).
  int64_t statements_run() const { return statements_run_; }
  int64_t commits() const { return commits_; }

 protected:
  int64_t statements_run_ = 0;
  int64_t commits_ = 0;
};

// Begins at construction; rolls back unless commit() was called.
class SqlTransaction {
 public:
  explicit SqlTransaction(SqlConnection& connection) : connection_(connection) { connection_.begin(); }
  ~SqlTransaction() {
    if (!done_) connection_.rollback();
  }
  SqlTransaction(const SqlTransaction&) = delete;
  SqlTransaction& operator=(const SqlTransaction&) = delete;
  void commit() {
    connection_.commit();
    done_ = true;
  }

 private:
  SqlConnection& connection_;
  bool done_ = false;
};

// SQLite: opens (creating) the file with WAL, synchronous=FULL, foreign keys on and a busy timeout.
std::unique_ptr<SqlConnection> open_sqlite(const std::string& path);
// PostgreSQL: `url` as libpq reads it (postgresql://user@host:port/db, or ?host=/socket/dir).
std::unique_ptr<SqlConnection> open_postgres(const std::string& url);

// Whether a configured database_url names PostgreSQL (postgresql:// or postgres://).
bool is_postgres_url(const std::string& url);
// The url without its password, for messages and logs.
std::string redacted_url(const std::string& url);

}  // namespace fedcal::coordinator
