// A PostgreSQL server of the tests' own: Debian's server binaries (initdb, pg_ctl) in a scratch folder,
// listening only on a unix socket there, stopped and deleted when the object goes. As root (CI), the
// server runs as the `postgres` user (PostgreSQL refuses root). Nothing is skipped when it cannot
// start: deploy/install-deps.sh installs it, so a missing server is an error naming the package.
#pragma once

#include <string>

#include "tests/test_support.h"

namespace fedcal::testing {

class PostgresServer {
 public:
  PostgresServer();  // initdb + start, about 1-2 s; throws std::runtime_error with initdb's or pg_ctl's output
  ~PostgresServer();
  PostgresServer(const PostgresServer&) = delete;
  PostgresServer& operator=(const PostgresServer&) = delete;

  // A new, empty database (fedcal_1, fedcal_2, ...) and the url that reaches it.
  std::string create_database();
  // The url of database `name`.
  std::string url(const std::string& name) const;
  // Runs `sql` in database `name` through psql; returns psql's output (throws on failure).
  std::string psql(const std::string& name, const std::string& sql) const;
  const std::string& socket_dir() const { return socket_dir_; }
  const std::string& bin_dir() const { return bin_dir_; }

 private:
  std::string as_server_user(const std::string& command) const;
  std::string bin_dir_, root_, data_dir_, socket_dir_;
  bool as_root_ = false;
  int databases_ = 0;
};

// The newest installed PostgreSQL's server binaries (/usr/lib/postgresql/N/bin); "" if none.
std::string postgres_bin_dir();

}  // namespace fedcal::testing
