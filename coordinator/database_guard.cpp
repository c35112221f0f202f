#include "coordinator/database_guard.h"

#include <SQLiteCpp/SQLiteCpp.h>
#include <fmt/chrono.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include <nlohmann/json.hpp>

#include "common/clock.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/subprocess.h"

namespace fedcal::coordinator {
namespace fs = std::filesystem;
namespace {

constexpr uint32_t kWalMagicLittleEndian = 0x377f0682;  // checksums over little-endian words
constexpr uint32_t kWalMagicBigEndian = 0x377f0683;
constexpr size_t kWalHeaderBytes = 32;
constexpr size_t kFrameHeaderBytes = 24;

uint32_t big_endian32(const unsigned char* p) {
  return uint32_t{p[0]} << 24 | uint32_t{p[1]} << 16 | uint32_t{p[2]} << 8 | uint32_t{p[3]};
}

// SQLite's WAL checksum: over 32-bit words (in the byte order the magic number says), continuing
// from `sum`.
void wal_checksum(const unsigned char* data, size_t bytes, bool big_endian, std::array<uint32_t, 2>& sum) {
  for (size_t i = 0; i + 8 <= bytes; i += 8) {
    uint32_t x0, x1;
    if (big_endian) {
      x0 = big_endian32(data + i);
      x1 = big_endian32(data + i + 4);
    } else {
      std::memcpy(&x0, data + i, 4);
      std::memcpy(&x1, data + i + 4, 4);
    }
    sum[0] += x0 + sum[1];
    sum[1] += x1 + sum[0];
  }
}

std::string utc_stamp() {
  const std::time_t now = static_cast<std::time_t>(wall_ms() / 1000);
  return fmt::format("{:%Y%m%dT%H%M%SZ}", fmt::gmtime(now));
}

bool holds_fedcal_tables(const std::string& path) {
  try {
    SQLite::Database db(path, SQLite::OPEN_READONLY);
    SQLite::Statement query(db, "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'agents'");
    return query.executeStep() && query.getColumn(0).getInt() == 1;
  } catch (const SQLite::Exception& error) {
    fail_as(ErrorKind::kCorruption, "{}: cannot be read as a database: {}", path, error.what());
  }
}

}  // namespace

void check_wal(const std::string& wal_path) {
  std::error_code error;
  if (!fs::exists(wal_path, error) || fs::file_size(wal_path, error) < kWalHeaderBytes) return;
  const std::string bytes = read_text_file(wal_path);
  const auto* data = reinterpret_cast<const unsigned char*>(bytes.data());
  const uint32_t magic = big_endian32(data);
  if (magic != kWalMagicLittleEndian && magic != kWalMagicBigEndian) {
    fail_as(ErrorKind::kCorruption, "{}: not a SQLite write-ahead log (magic {:08x})", wal_path, magic);
  }
  const bool big_endian = magic == kWalMagicBigEndian;
  const uint32_t page_size = big_endian32(data + 8);
  std::array<uint32_t, 2> sum{0, 0};
  wal_checksum(data, 24, big_endian, sum);
  if (sum[0] != big_endian32(data + 24) || sum[1] != big_endian32(data + 28)) {
    return;  // a header that does not check out: SQLite ignores the whole log (it was never synced)
  }
  if (page_size < 512 || page_size > 65536 || (page_size & (page_size - 1)) != 0) {
    fail_as(ErrorKind::kCorruption, "{}: page size {} in its header", wal_path, page_size);
  }
  const uint32_t salt1 = big_endian32(data + 16), salt2 = big_endian32(data + 20);
  const size_t frame_bytes = kFrameHeaderBytes + page_size;
  const auto same_log = [&](size_t at) { return big_endian32(data + at + 8) == salt1 && big_endian32(data + at + 12) == salt2; };
  size_t frame = 0;
  for (size_t at = kWalHeaderBytes; at + frame_bytes <= bytes.size(); at += frame_bytes, ++frame) {
    if (!same_log(at)) return;  // frames of an earlier log (before a checkpoint reset): not replayed
    std::array<uint32_t, 2> next = sum;
    wal_checksum(data + at, 8, big_endian, next);
    wal_checksum(data + at + kFrameHeaderBytes, page_size, big_endian, next);
    if (next[0] == big_endian32(data + at + 16) && next[1] == big_endian32(data + at + 20)) {
      sum = next;
      continue;
    }
    // A bad frame: the torn end of a write that never committed is the last frame of the log; a
    // bad frame followed by more frames of the same log is damage to committed data.
    for (size_t later = at + frame_bytes; later + frame_bytes <= bytes.size(); later += frame_bytes) {
      if (same_log(later)) {
        fail_as(ErrorKind::kCorruption,
                "{}: frame {} (byte {}) fails its checksum but later frames of the same log follow: the log is damaged, "
                "and SQLite would silently drop every commit from that frame on",
                wal_path, frame, at);
      }
    }
    return;
  }
}

std::string database_findings(SQLite::Database& db, const char* check) {
  SQLite::Statement query(db, std::string("PRAGMA ") + check);
  std::string findings;
  while (query.executeStep()) {
    const std::string line = query.getColumn(0).getString();
    if (line != "ok") findings += (findings.empty() ? "" : "; ") + line;
  }
  return findings.substr(0, 2000);
}

void check_database_file(const std::string& path) {
  try {
    SQLite::Database db(path, SQLite::OPEN_READONLY);
    const std::string findings = database_findings(db, "integrity_check");
    if (!findings.empty()) fail_as(ErrorKind::kCorruption, "{}: integrity_check: {}", path, findings);
  } catch (const SQLite::Exception& error) {
    fail_as(ErrorKind::kCorruption, "{}: cannot be read as a database: {}", path, error.what());
  }
}

std::unique_ptr<SqlConnection> open_database(const CoordinatorConfig& config) {
  if (config.uses_postgres()) return open_postgres(config.database_url);
  return open_sqlite(config.database_path());
}

std::unique_ptr<SqlConnection> open_database_as_leader(const CoordinatorConfig& config, int poll_ms,
                                                       const std::function<bool()>& stopping,
                                                       const std::function<void(const std::string&)>& log,
                                                       const std::function<void()>& waiting) {
  std::unique_ptr<SqlConnection> database = open_database(config);
  const std::string marker = standby_marker_path(config);
  bool said = false;
  const auto done_waiting = [&] {
    std::error_code ignored;
    if (said) fs::remove(marker, ignored);
  };
  while (!database->try_lead(kLeadLock)) {
    if (!said) {
      fs::create_directories(config.state_dir);
      write_file_atomically(marker, nlohmann::json{{"role", "standby"},
                                                   {"pid", static_cast<int64_t>(getpid())},
                                                   {"database", database->name()},
                                                   {"since_ms", wall_ms()}}
                                        .dump());
      said = true;
      log(fmt::format("standby: another coordinator leads {}; taking over when it stops", database->name()));
    }
    if (waiting) waiting();
    for (int waited = 0; waited < poll_ms; waited += 100) {
      if (stopping()) {
        done_waiting();
        return nullptr;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(std::min(100, poll_ms - waited)));
    }
  }
  done_waiting();
  if (said) log(fmt::format("leading {} now (the coordinator before stopped)", database->name()));
  return database;
}

void check_database_before_open(const CoordinatorConfig& config, bool allow_new) {
  const std::string path = config.database_path();
  std::error_code error;
  const bool has_keys = fs::exists(config.curve_key_path(), error) || fs::exists(config.signing_key_path(), error);
  const bool has_artifacts = fs::is_directory(config.artifacts_dir(), error) && !fs::is_empty(config.artifacts_dir(), error);
  const std::string restore = fmt::format(
      "restore it with `fedcal-coordinator db restore BACKUP` from {} (see docs/DURABILITY.md), or start with "
      "`serve --new-database` to begin an empty registry on purpose (every enrolled agent will have to enroll again)",
      backups_dir(config.state_dir));
  if (config.uses_postgres()) {
    // Unreachable: an I/O error naming the url. Reachable but empty beside keys: a wrong url, or a
    // database dropped or recreated.
    if (!open_postgres(config.database_url)->has_table("agents") && (has_keys || has_artifacts) && !allow_new) {
      fail_as(ErrorKind::kCorruption, "{} holds no fedcal tables while {} holds {} of an earlier start: {}",
              config.database_name(), config.state_dir, has_keys ? "the coordinator's keys" : "artifacts", restore);
    }
    return;
  }
  const bool present = fs::exists(path, error) && fs::file_size(path, error) > 0;
  if (!present && (has_keys || has_artifacts) && !allow_new) {
    fail_as(ErrorKind::kCorruption, "{} is {} while {} holds {} of an earlier start: {}", path,
            fs::exists(path, error) ? "empty" : "missing", config.state_dir, has_keys ? "the coordinator's keys" : "artifacts",
            restore);
  }
  if (!present) return;
  check_wal(path + "-wal");
  if (!holds_fedcal_tables(path) && (has_keys || has_artifacts) && !allow_new) {
    fail_as(ErrorKind::kCorruption, "{} holds no fedcal tables while {} holds {} of an earlier start: {}", path,
            config.state_dir, has_keys ? "the coordinator's keys" : "artifacts", restore);
  }
}

int64_t backup_database(const std::string& database, const std::string& destination) {
  fs::create_directories(fs::path(destination).parent_path());
  const std::string partial = destination + ".partial";
  std::error_code error;
  fs::remove(partial, error);
  try {
    SQLite::Database db(database, SQLite::OPEN_READONLY);
    db.setBusyTimeout(5000);
    std::string quoted;
    for (const char c : partial) quoted += c == '\'' ? std::string("''") : std::string(1, c);
    db.exec("VACUUM INTO '" + quoted + "'");
  } catch (const SQLite::Exception& e) {
    fs::remove(partial, error);
    fail_as(ErrorKind::kIo, "backing up {} to {}: {}", database, destination, e.what());
  }
  fs::rename(partial, destination);
  return static_cast<int64_t>(fs::file_size(destination));
}

namespace {

// Runs a PostgreSQL client tool; its output names what went wrong.
void run_postgres_tool(const std::vector<std::string>& argv, const std::string& doing) {
  const ProgramResult result = with_context([&] { return doing; }, [&] { return run_program(argv); });
  if (result.exit_code != 0)
    fail_as(ErrorKind::kIo, "{}: {} exited with {}: {}", doing, argv[0], result.exit_code, result.output.substr(0, 2000));
}

}  // namespace

int64_t backup_database(const CoordinatorConfig& config, const std::string& destination) {
  if (!config.uses_postgres()) return backup_database(config.database_path(), destination);
  fs::create_directories(fs::path(destination).parent_path());
  const std::string partial = destination + ".partial";
  std::error_code error;
  fs::remove(partial, error);
  try {
    run_postgres_tool({"pg_dump", "--format=custom", "--file=" + partial, "--dbname=" + config.database_url},
                      fmt::format("backing up {} to {}", config.database_name(), destination));
  } catch (const Error&) {
    fs::remove(partial, error);
    throw;
  }
  fs::rename(partial, destination);
  return static_cast<int64_t>(fs::file_size(destination));
}

std::string backups_dir(const std::string& state_dir) { return state_dir + "/backups"; }

std::string backup_path(const std::string& state_dir, const std::string& why, const std::string& extension) {
  return fmt::format("{}/coordinator-{}-{}{}", backups_dir(state_dir), utc_stamp(), why, extension);
}

std::string backup_path(const CoordinatorConfig& config, const std::string& why) {
  return backup_path(config.state_dir, why, config.uses_postgres() ? ".pgdump" : ".db");
}

namespace {

// Backups of one kind, oldest first (the UTC stamp in the name sorts by time).
std::vector<std::string> backups_of(const std::string& state_dir, const std::string& why) {
  std::vector<std::string> kind;
  std::error_code error;
  for (const auto& entry : fs::directory_iterator(backups_dir(state_dir), error)) {
    const std::string name = entry.path().filename().string();
    for (const std::string& suffix : {"-" + why + ".db", "-" + why + ".pgdump"}) {
      if (name.rfind("coordinator-", 0) == 0 && name.size() > suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        kind.push_back(entry.path().string());
    }
  }
  std::sort(kind.begin(), kind.end());
  return kind;
}

}  // namespace

int64_t newest_backup_ms(const std::string& state_dir, const std::string& why) {
  const std::vector<std::string> kind = backups_of(state_dir, why);
  if (kind.empty()) return 0;
  std::error_code error;
  const auto written = fs::last_write_time(kind.back(), error);
  if (error) return 0;
  const auto system = std::chrono::file_clock::to_sys(written);
  return std::chrono::duration_cast<std::chrono::milliseconds>(system.time_since_epoch()).count();
}

std::vector<std::string> prune_backups(const std::string& state_dir, const std::string& why, int keep) {
  const std::vector<std::string> kind = backups_of(state_dir, why);
  std::error_code error;
  std::vector<std::string> deleted;
  for (size_t i = 0; i + static_cast<size_t>(std::max(keep, 0)) < kind.size(); ++i) {
    if (fs::remove(kind[i], error)) deleted.push_back(kind[i]);
  }
  return deleted;
}

std::string restore_database(const CoordinatorConfig& config, const std::string& backup) {
  if (!fs::is_regular_file(backup)) fail_as(ErrorKind::kNotFound, "{}: no such backup file", backup);
  if (config.uses_postgres()) {
    const ProgramResult list = run_program({"pg_restore", "--list", backup});
    if (list.exit_code != 0) fail("{}: not a pg_dump archive (pg_restore --list: {})", backup, list.output.substr(0, 500));
    if (list.output.find(" TABLE public agents ") == std::string::npos)
      fail("{}: not a fedcal coordinator database (no agents table)", backup);
    const std::string replaced = backup_path(config, "replaced");
    backup_database(config, replaced);
    run_postgres_tool(
        {"pg_restore", "--clean", "--if-exists", "--single-transaction", "--no-owner", "--dbname=" + config.database_url, backup},
        fmt::format("restoring {} into {}", backup, config.database_name()));
    write_file_atomically(config.restored_marker_path(), backup, 0600);
    return replaced;
  }
  check_database_file(backup);
  if (!holds_fedcal_tables(backup)) fail("{}: not a fedcal coordinator database (no agents table)", backup);
  const std::string path = config.database_path();
  const std::string incoming = path + ".restoring";
  fs::copy_file(backup, incoming, fs::copy_options::overwrite_existing);
  std::string replaced;
  const std::string stamp = utc_stamp();
  std::error_code error;
  if (fs::exists(path, error)) {
    replaced = path + ".replaced-" + stamp;
    fs::rename(path, replaced);
  }
  for (const char* suffix : {"-wal", "-shm"}) {
    if (fs::exists(path + suffix, error)) fs::rename(path + suffix, path + ".replaced-" + stamp + suffix);
  }
  fs::rename(incoming, path);
  // The next start ends what the backup says was running (server.cpp) instead of resuming it.
  write_file_atomically(path + ".restored", backup, 0600);
  return replaced;
}

}  // namespace fedcal::coordinator
