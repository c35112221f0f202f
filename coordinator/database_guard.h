// Checks of the coordinator's database before it is opened, and its backups. A database that is
// missing or empty beside keys and artifacts of an earlier start (deleted, truncated, a wrong
// state_dir or database_url), a damaged file, or a write-ahead log whose committed frames do not
// check out (SQLite would silently ignore them and run on older state) is refused with the file, what
// is wrong and how to restore. Backups are consistent online copies in STATE/backups: VACUUM INTO
// (SQLite, .db) or pg_dump's custom format (PostgreSQL, .pgdump).
#pragma once

#include <SQLiteCpp/SQLiteCpp.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "coordinator/coordinator_config.h"
#include "coordinator/sql_connection.h"

namespace fedcal::coordinator {

// The configured database: SQLite in state_dir, or PostgreSQL at database_url.
std::unique_ptr<SqlConnection> open_database(const CoordinatorConfig& config);

// Coordinators sharing one PostgreSQL database: one leads (holds the advisory lock kLeadLock on its
// store's connection), the others wait as standbys and take over when its session ends (the process
// died, or the server cut it off). Opens the database and returns once this process leads; every
// `poll_ms` it tries again, saying so through `log` when it starts waiting and when it leads (and
// `waiting` is called on each try: systemd's watchdog). nullptr if `stopping()` turned true first.
// While it waits, STATE/standby.json (standby_marker_path) says so - its pid, the database, since when -
// for `fedcal-coordinator status`, which finds no admin socket on a standby.
// (PostgreSQL only: a SQLite database has one coordinator, the state folder's lock holder.)
inline constexpr int64_t kLeadLock = 0x6665'6463'616c;  // "fedcal" in ASCII
inline std::string standby_marker_path(const CoordinatorConfig& config) { return config.state_dir + "/standby.json"; }
std::unique_ptr<SqlConnection> open_database_as_leader(const CoordinatorConfig& config, int poll_ms,
                                                       const std::function<bool()>& stopping,
                                                       const std::function<void(const std::string&)>& log,
                                                       const std::function<void()>& waiting);

// Throws Error (kCorruption) naming the file if the database must not be opened as it is:
// missing or empty while the state folder holds keys or artifacts (unless `allow_new`), or its WAL
// damaged. A first start (nothing in the folder) passes.
void check_database_before_open(const CoordinatorConfig& config, bool allow_new);

// Reads a SQLite write-ahead log; throws Error naming `wal_path` if a frame of the current log
// (its salts match the header) fails its checksum while a later frame of the same log is intact:
// that is damage, not the torn tail of an interrupted write, and SQLite would drop every commit
// from there on without a word. A missing or empty log passes.
void check_wal(const std::string& wal_path);

// What `PRAGMA <check>` (quick_check, integrity_check) of `db` finds, "; "-joined and cut at 2,000
// bytes; "" when it says ok.
std::string database_findings(SQLite::Database& db, const char* check);

// `PRAGMA integrity_check` of a database file (read-only); throws Error (kCorruption) with SQLite's
// findings.
void check_database_file(const std::string& path);

// A consistent copy of the live database at `destination` (VACUUM INTO on a read-only connection
// of its own: safe beside the daemon's writes); returns its size in bytes.
int64_t backup_database(const std::string& database, const std::string& destination);
// The configured database's backup: as above for SQLite; pg_dump --format=custom for PostgreSQL (a
// snapshot in one transaction, safe beside the daemon's writes).
int64_t backup_database(const CoordinatorConfig& config, const std::string& destination);

std::string backups_dir(const std::string& state_dir);
// STATE/backups/coordinator-<UTC time>-<why><extension>
std::string backup_path(const std::string& state_dir, const std::string& why, const std::string& extension = ".db");
// The configured database's: .db (SQLite) or .pgdump (PostgreSQL).
std::string backup_path(const CoordinatorConfig& config, const std::string& why);
// Deletes all but the newest `keep` backups of the given kind ("scheduled"); returns the deleted.
std::vector<std::string> prune_backups(const std::string& state_dir, const std::string& why, int keep);
// Wall-clock time (ms) of the newest backup of that kind; 0 if there is none.
int64_t newest_backup_ms(const std::string& state_dir, const std::string& why);

// Replaces the database with `backup` (checked first with integrity_check); the replaced files are
// kept beside it as coordinator.db.replaced-<time> (and -wal, -shm). The daemon must be stopped.
// Returns the name the replaced database was given ("" if there was none). On PostgreSQL: the
// backup (a .pgdump) is checked with pg_restore --list, a dump of the database as it was is kept in
// STATE/backups (...-replaced.pgdump, returned), then pg_restore --clean in one transaction.
std::string restore_database(const CoordinatorConfig& config, const std::string& backup);

}  // namespace fedcal::coordinator
