// The coordinator's database refused when missing, empty or damaged (file, WAL), and backups that
// restore: real SQLite files, and a real Server for the refusal at start.
#include "coordinator/database_guard.h"

#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>

#include "common/error.h"
#include "common/file_util.h"
#include "common/signing.h"
#include "coordinator/server.h"
#include "coordinator/store.h"
#include "tests/test_support.h"

namespace fedcal::coordinator {
namespace {
namespace fs = std::filesystem;

CoordinatorConfig config_in(const testing::ScratchDir& dir) {
  CoordinatorConfig config;
  config.state_dir = dir.path("state");
  config.listen = "tcp://127.0.0.1:0";
  fs::create_directories(config.state_dir);
  return config;
}

// A database with `agents` enrolled agents, written in as many transactions.
void enroll(Store& store, int agents) {
  for (int i = 0; i < agents; ++i) store.redeem_token(store.create_token(60000), "key-" + std::to_string(i), "agent");
}

// Overwrites `count` bytes at `offset` of `path` with a pattern.
void scribble(const std::string& path, size_t offset, size_t count) {
  std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
  file.seekp(static_cast<std::streamoff>(offset));
  for (size_t i = 0; i < count; ++i) file.put(static_cast<char>(0xA5 ^ i));
}

TEST_CASE("Database: a missing, empty or foreign database beside keys of an earlier start is refused, naming the file") {
  testing::ScratchDir dir;
  CoordinatorConfig config = config_in(dir);
  CHECK_NOTHROW(check_database_before_open(config, false));  // a first start: nothing there yet
  SigningKey::generate().write_private_key(config.signing_key_path());
  SUBCASE("missing") {
    const std::string expected = config.database_path() + " is missing while " + config.state_dir + " holds the coordinator's keys";
    CHECK_THROWS_WITH(check_database_before_open(config, false), doctest::Contains(expected.c_str()));
    // The daemon itself refuses to start (a real Server, before it binds anything).
    CHECK_THROWS_WITH(Server{config}, doctest::Contains("db restore"));
    CHECK_NOTHROW(check_database_before_open(config, /*allow_new=*/true));
  }
  SUBCASE("empty (0 bytes)") {
    std::ofstream(config.database_path()).flush();
    CHECK_THROWS_WITH(check_database_before_open(config, false), doctest::Contains("coordinator.db is empty"));
  }
  SUBCASE("a SQLite file without fedcal's tables") {
    {
      SQLite::Database other(config.database_path(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
      other.exec("CREATE TABLE something (x INTEGER)");
    }
    CHECK_THROWS_WITH(check_database_before_open(config, false), doctest::Contains("holds no fedcal tables"));
  }
  SUBCASE("the real database passes") {
    { Store store(config.database_path()); }
    CHECK_NOTHROW(check_database_before_open(config, false));
  }
}

TEST_CASE("Database: a damaged file is refused at open by quick_check, with SQLite's findings") {
  testing::ScratchDir dir;
  const std::string path = dir.path("c.db");
  {
    Store store(path);
    for (int i = 0; i < 2000; ++i) store.audit("test", "event", std::string(200, 'x'));
  }
  REQUIRE(fs::file_size(path) > 200000);
  scribble(path, fs::file_size(path) / 2, 4096);  // a page in the middle of the audit table's B-tree
  try {
    Store store(path);
    FAIL("a damaged database was opened");
  } catch (const Error& error) {
    CHECK_MESSAGE(error.kind() == ErrorKind::kCorruption, std::string(error.what()));
    CHECK(std::string(error.what()).find(path) != std::string::npos);
  }
}

TEST_CASE("Database: a write-ahead log damaged in its middle is refused, its intact copy opens with every commit") {
  testing::ScratchDir dir;
  const std::string live = dir.path("live.db");
  Store store(live);
  enroll(store, 30);  // 60 commits in the WAL (no checkpoint: the connection stays open)
  // What a SIGKILL leaves on disk: the database file and its WAL, copied while the daemon runs.
  const std::string killed = dir.path("killed.db");
  fs::copy_file(live, killed);
  fs::copy_file(live + "-wal", killed + "-wal");
  const auto wal_bytes = fs::file_size(killed + "-wal");
  REQUIRE(wal_bytes > 20 * 4096);
  SUBCASE("intact: passes, and every agent is there") {
    CHECK_NOTHROW(check_wal(killed + "-wal"));
    Store reopened(killed);
    CHECK(reopened.agents().size() == 30);
  }
  SUBCASE("a frame in the middle damaged: refused (SQLite alone would open it with fewer agents)") {
    scribble(killed + "-wal", wal_bytes / 2, 64);
    CHECK_THROWS_WITH(check_wal(killed + "-wal"), doctest::Contains("fails its checksum but later frames of the same log follow"));
    Store silently_older(killed);
    CHECK(silently_older.agents().size() < 30);  // what the check prevents
  }
  SUBCASE("a torn last frame (an interrupted write that never committed) is not damage") {
    fs::resize_file(killed + "-wal", wal_bytes - 100);
    CHECK_NOTHROW(check_wal(killed + "-wal"));
  }
}

TEST_CASE("Database: a backup taken while the store is open restores the state it had, keeping the replaced file") {
  testing::ScratchDir dir;
  CoordinatorConfig config = config_in(dir);
  std::string backup;
  {
    Store store(config.database_path());
    enroll(store, 3);
    backup = backup_path(config.state_dir, "manual");
    CHECK(backup_database(config.database_path(), backup) > 0);
    enroll(store, 5);  // after the backup
    CHECK(store.agents().size() == 5);
  }
  CHECK_NOTHROW(check_database_file(backup));
  const std::string replaced = restore_database(config, backup);
  CHECK(fs::exists(replaced));
  Store restored(config.database_path());
  CHECK(restored.agents().size() == 3);
  SUBCASE("a damaged backup is not restored") {
    scribble(backup, 0, 100);
    CHECK_THROWS_WITH(restore_database(config, backup), doctest::Contains(backup.c_str()));
  }
}

TEST_CASE("Database: scheduled backups are pruned to the newest N, a database of an older version is backed up before migrating") {
  testing::ScratchDir dir;
  CoordinatorConfig config = config_in(dir);
  fs::create_directories(backups_dir(config.state_dir));
  for (const char* stamp : {"20260101T000000Z", "20260102T000000Z", "20260103T000000Z"}) {
    std::ofstream(backups_dir(config.state_dir) + "/coordinator-" + stamp + "-scheduled.db") << "x";
  }
  std::ofstream(backups_dir(config.state_dir) + "/coordinator-20250101T000000Z-manual.db") << "x";
  CHECK(prune_backups(config.state_dir, "scheduled", 2).size() == 1);
  CHECK_FALSE(fs::exists(backups_dir(config.state_dir) + "/coordinator-20260101T000000Z-scheduled.db"));
  CHECK(fs::exists(backups_dir(config.state_dir) + "/coordinator-20250101T000000Z-manual.db"));
  CHECK(newest_backup_ms(config.state_dir, "scheduled") > 0);
  {
    // An older version's agents table, without the columns added since.
    SQLite::Database old(config.database_path(), SQLite::OPEN_READWRITE | SQLite::OPEN_CREATE);
    old.exec("CREATE TABLE agents (id INTEGER PRIMARY KEY, public_key TEXT NOT NULL UNIQUE, name TEXT NOT NULL, "
             "enrolled_at_ms INTEGER NOT NULL, revoked_at_ms INTEGER, last_seen_ms INTEGER NOT NULL DEFAULT 0, "
             "profile_json TEXT NOT NULL DEFAULT '{}', active_model_sha TEXT NOT NULL DEFAULT '')");
    old.exec("INSERT INTO agents (public_key, name, enrolled_at_ms) VALUES ('k', 'old agent', 1)");
  }
  Store store(config.database_path());
  REQUIRE_FALSE(store.migration_backup().empty());
  CHECK(store.agents().at(0).name == "old agent");
  CHECK(store.agents().at(0).last_error.empty());
  SQLite::Database before(store.migration_backup(), SQLite::OPEN_READONLY);
  SQLite::Statement columns(before, "SELECT count(*) FROM pragma_table_info('agents') WHERE name = 'last_sequence'");
  REQUIRE(columns.executeStep());
  CHECK(columns.getColumn(0).getInt() == 0);  // the backup is the database as it was
}

}  // namespace
}  // namespace fedcal::coordinator
