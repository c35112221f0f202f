// The SQLite backend of SqlConnection (SQLiteCpp): the coordinator's default database, one file in
// the state folder.
#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/format.h>
#include <sqlite3.h>

#include <map>

#include "common/error.h"
#include "coordinator/database_guard.h"
#include "coordinator/sql_connection.h"

namespace fedcal::coordinator {
namespace {

// A full or failing disk: kIo; a damaged database: kCorruption; anything else: kInternal.
ErrorKind error_kind(const SQLite::Exception& error) {
  const int code = error.getErrorCode() & 0xff;
  return code == SQLITE_CORRUPT || code == SQLITE_NOTADB ? ErrorKind::kCorruption
         : code == SQLITE_FULL || code == SQLITE_IOERR || code == SQLITE_CANTOPEN || code == SQLITE_READONLY
             ? ErrorKind::kIo
             : ErrorKind::kInternal;
}

class SqliteConnection final : public SqlConnection {
 public:
  explicit SqliteConnection(const std::string& path) : path_(path), db_(open(path)) {
    call([&] {
      db_.setBusyTimeout(5000);
      db_.exec("PRAGMA journal_mode=WAL");
      db_.exec("PRAGMA synchronous=FULL");
      db_.exec("PRAGMA foreign_keys=ON");
      // Damage found now is said now, not discovered by the first query that touches it.
      const std::string findings = database_findings(db_, "quick_check");
      if (!findings.empty())
        fail_as(ErrorKind::kCorruption,
                "the database is damaged (quick_check: {}); restore it from a backup (docs/DURABILITY.md)", findings);
    });
  }

  SqlDialect dialect() const override { return SqlDialect::kSqlite; }
  const std::string& name() const override { return path_; }

  void run_script(const std::string& sql) override {
    call([&] { db_.exec(sql); });
    ++statements_run_;
  }

  SqlRows query(const std::string& sql, const std::vector<SqlValue>& parameters) override {
    return call([&] {
      SQLite::Statement& statement = bound(sql, parameters);
      SqlRows rows;
      while (statement.executeStep()) {
        std::vector<SqlValue> values;
        values.reserve(static_cast<size_t>(statement.getColumnCount()));
        for (int i = 0; i < statement.getColumnCount(); ++i) {
          const SQLite::Column column = statement.getColumn(i);
          if (column.isNull())
            values.emplace_back(std::monostate{});
          else if (column.isInteger())
            values.emplace_back(column.getInt64());
          else
            values.emplace_back(column.getString());
        }
        rows.emplace_back(std::move(values));
      }
      statement.reset();
      return rows;
    });
  }

  int64_t execute(const std::string& sql, const std::vector<SqlValue>& parameters) override {
    return call([&]() -> int64_t {
      SQLite::Statement& statement = bound(sql, parameters);
      const int changed = statement.exec();
      statement.reset();
      return changed;
    });
  }

  void begin() override {
    call([&] { db_.exec("BEGIN IMMEDIATE"); });
    in_transaction_ = true;
  }
  void commit() override {
    call([&] { db_.exec("COMMIT"); });
    in_transaction_ = false;
    ++commits_;
  }
  void rollback() noexcept override {
    in_transaction_ = false;
    try {
      db_.exec("ROLLBACK");
    } catch (const SQLite::Exception&) {
      // Nothing to roll back (SQLite already did, on the error that brought us here).
    }
  }

  bool has_table(const std::string& table) override {
    return query("SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?", {table}).at(0).int64(0) > 0;
  }
  bool has_column(const std::string& table, const std::string& column) override {
    return query("SELECT count(*) FROM pragma_table_info(?) WHERE name = ?", {table, column}).at(0).int64(0) > 0;
  }
  bool try_lead(int64_t) override { return true; }  // one coordinator per file: the state folder's lock
  bool connected() const override { return true; }

 private:
  static SQLite::Database open(const std::string& path) {
    try {
      return SQLite::Database(path, SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    } catch (const SQLite::Exception& e) {
      fail_as(ErrorKind::kIo, "opening the coordinator database {}: {}", path, e.what());
    }
  }

  template <typename Body>
  auto call(Body&& body) -> decltype(body()) {
    try {
      return with_context([&] { return path_; }, body);
    } catch (const SQLite::Exception& error) {
      const ErrorKind kind = error_kind(error);
      if (kind == ErrorKind::kCorruption)
        fail_as(kind, "{}: the database is damaged ({}); restore it from a backup (docs/DURABILITY.md)", path_, error.what());
      fail_as(kind, "{}: {}", path_, error.what());
    }
  }

  // The statement for `sql`, prepared on first use and kept, with `parameters` bound.
  SQLite::Statement& bound(const std::string& sql, const std::vector<SqlValue>& parameters) {
    auto found = statements_.find(sql);
    if (found == statements_.end()) found = statements_.emplace(sql, std::make_unique<SQLite::Statement>(db_, sql)).first;
    SQLite::Statement& statement = *found->second;
    statement.reset();
    statement.clearBindings();
    for (size_t i = 0; i < parameters.size(); ++i) {
      const int index = static_cast<int>(i) + 1;
      if (const auto* number = std::get_if<int64_t>(&parameters[i]))
        statement.bind(index, *number);
      else if (const auto* text = std::get_if<std::string>(&parameters[i]))
        statement.bind(index, *text);
      else
        statement.bind(index);
    }
    ++statements_run_;
    if (!in_transaction_) ++commits_;
    return statement;
  }

  std::string path_;
  bool in_transaction_ = false;
  SQLite::Database db_;
  std::map<std::string, std::unique_ptr<SQLite::Statement>> statements_;
};

}  // namespace

std::unique_ptr<SqlConnection> open_sqlite(const std::string& path) { return std::make_unique<SqliteConnection>(path); }

}  // namespace fedcal::coordinator
