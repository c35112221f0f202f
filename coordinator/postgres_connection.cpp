// The PostgreSQL backend of SqlConnection (libpqxx): for fleets whose registry outgrows one machine's
// SQLite file (database_url = "postgresql://..." in the coordinator's config).
#include <fmt/format.h>

#include <map>
#include <pqxx/pqxx>

#include "common/error.h"
#include "coordinator/sql_connection.h"

// Parameters go to libpq as text, NULL as NULL.
template <>
struct pqxx::string_traits<fedcal::coordinator::SqlValue> {
  using Value = fedcal::coordinator::SqlValue;
  static constexpr const char* name() noexcept { return "SqlValue"; }
  static constexpr bool has_null() noexcept { return true; }
  static bool is_null(const Value& value) { return std::holds_alternative<std::monostate>(value); }
  static Value null() { return Value{}; }
  static void from_string(const char text[], Value& value) { value = std::string(text); }
  static std::string to_string(const Value& value) {
    if (const auto* number = std::get_if<int64_t>(&value)) return std::to_string(*number);
    return std::get<std::string>(value);
  }
};

namespace fedcal::coordinator {
namespace {

// `?` placeholders (outside quoted text) become PostgreSQL's $1, $2, ...
std::string numbered_placeholders(const std::string& sql) {
  std::string out;
  out.reserve(sql.size() + 16);
  bool quoted = false;
  int next = 1;
  for (const char c : sql) {
    if (c == '\'') quoted = !quoted;
    if (c == '?' && !quoted)
      out += "$" + std::to_string(next++);
    else
      out += c;
  }
  return out;
}

// The connection failed or the server is out of resources: kIo; data corruption (SQLSTATE XX001,
// XX002): kCorruption; anything else (a constraint, a bad statement): kInternal.
ErrorKind error_kind(const std::string& sqlstate) {
  if (sqlstate == "XX001" || sqlstate == "XX002") return ErrorKind::kCorruption;
  if (sqlstate.rfind("08", 0) == 0 || sqlstate.rfind("53", 0) == 0 || sqlstate.rfind("57", 0) == 0 ||
      sqlstate.rfind("58", 0) == 0)
    return ErrorKind::kIo;
  return ErrorKind::kInternal;
}

class PostgresConnection final : public SqlConnection {
 public:
  explicit PostgresConnection(const std::string& url) : name_(redacted_url(url)), connection_(open(url, name_)) {
    // libpqxx would reconnect silently after a break: a new session without the lead's lock
    // (try_lead), from which a deposed leader could go on writing. (Deprecated in libpqxx 6 because
    // version 7 never reconnects.)
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    connection_->inhibit_reactivation(true);
#pragma GCC diagnostic pop
    call([&] {
      pqxx::nontransaction setup(*connection_);
      // Quiet NOTICEs ("relation already exists, skipping") would go to stderr.
      setup.exec("SET client_min_messages = warning");
    });
  }

  SqlDialect dialect() const override { return SqlDialect::kPostgres; }
  const std::string& name() const override { return name_; }

  void run_script(const std::string& sql) override {
    call([&] {
      if (work_) {
        work_->exec(sql);
      } else {
        pqxx::nontransaction once(*connection_);
        once.exec(sql);
      }
    });
    ++statements_run_;
  }

  SqlRows query(const std::string& sql, const std::vector<SqlValue>& parameters) override {
    return call([&] {
      const pqxx::result result = run(sql, parameters);
      SqlRows rows;
      rows.reserve(result.size());
      for (const pqxx::row& row : result) {
        std::vector<SqlValue> values;
        values.reserve(row.size());
        for (const pqxx::field& field : row) {
          if (field.is_null())
            values.emplace_back(std::monostate{});
          else
            values.emplace_back(std::string(field.c_str(), field.size()));
        }
        rows.emplace_back(std::move(values));
      }
      return rows;
    });
  }

  int64_t execute(const std::string& sql, const std::vector<SqlValue>& parameters) override {
    return call([&]() -> int64_t { return static_cast<int64_t>(run(sql, parameters).affected_rows()); });
  }

  void begin() override {
    call([&] { work_ = std::make_unique<pqxx::work>(*connection_); });
  }
  void commit() override {
    call([&] {
      work_->commit();
      work_.reset();
    });
    ++commits_;
  }
  void rollback() noexcept override {
    try {
      if (work_) work_->abort();
    } catch (const std::exception&) {
      // The connection is gone: the server rolled it back.
    }
    work_.reset();
  }

  bool try_lead(int64_t key) override { return query("SELECT pg_try_advisory_lock(?)", {key}).at(0).text(0) == "t"; }
  bool connected() const override { return connection_->is_open(); }

  bool has_table(const std::string& table) override {
    return query("SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = ?",
                 {table})
               .at(0)
               .int64(0) > 0;
  }
  bool has_column(const std::string& table, const std::string& column) override {
    return query(
               "SELECT count(*) FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ? AND "
               "column_name = ?",
               {table, column})
               .at(0)
               .int64(0) > 0;
  }

 private:
  static std::unique_ptr<pqxx::connection> open(const std::string& url, const std::string& name) {
    try {
      return std::make_unique<pqxx::connection>(url);
    } catch (const std::exception& e) {
      fail_as(ErrorKind::kIo, "connecting to the coordinator database {}: {}", name, e.what());
    }
  }

  template <typename Body>
  auto call(Body&& body) -> decltype(body()) {
    try {
      return with_context([&] { return name_; }, body);
    } catch (const pqxx::sql_error& error) {
      fail_as(error_kind(error.sqlstate()), "{}: {}", name_, trimmed(error.what()));
    } catch (const pqxx::broken_connection& error) {
      fail_as(ErrorKind::kIo, "{}: the connection to the server broke: {}", name_, trimmed(error.what()));
    } catch (const pqxx::failure& error) {
      fail_as(ErrorKind::kIo, "{}: {}", name_, trimmed(error.what()));
    }
  }

  static std::string trimmed(std::string text) {
    while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
    return text;
  }

  // Runs a statement, prepared on first use and kept, in the open transaction or on its own.
  pqxx::result run(const std::string& sql, const std::vector<SqlValue>& parameters) {
    auto found = prepared_.find(sql);
    if (found == prepared_.end()) {
      const std::string statement = "s" + std::to_string(prepared_.size() + 1);
      connection_->prepare(statement, numbered_placeholders(sql));
      found = prepared_.emplace(sql, statement).first;
    }
    ++statements_run_;
    if (work_) return work_->exec_prepared(found->second, pqxx::prepare::make_dynamic_params(parameters));
    ++commits_;
    pqxx::nontransaction once(*connection_);
    return once.exec_prepared(found->second, pqxx::prepare::make_dynamic_params(parameters));
  }

  std::string name_;
  std::unique_ptr<pqxx::connection> connection_;
  std::unique_ptr<pqxx::work> work_;             // the open transaction, if any
  std::map<std::string, std::string> prepared_;  // SQL -> statement name
};

}  // namespace

std::unique_ptr<SqlConnection> open_postgres(const std::string& url) { return std::make_unique<PostgresConnection>(url); }

}  // namespace fedcal::coordinator
