#include "coordinator/coordinator_config.h"
#include "coordinator/sql_connection.h"

#include <toml++/toml.h>

#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/toml_keys.h"
#include "transport/curve.h"

namespace fedcal::coordinator {
namespace fs = std::filesystem;

CoordinatorConfig CoordinatorConfig::load(const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& error) {
    fail("{}: line {}: {}", path, error.source().begin.line, error.description());
  }
  static const std::set<std::string> known = {"listen",
                                              "state_dir",
                                              "heartbeat_interval_ms",
                                              "agent_timeout_ms",
                                              "stage_timeout_ms",
                                              "join_timeout_ms",
                                              "join_grace_ms",
                                              "report_timeout_ms",
                                              "max_message_bytes",
                                              "chunk_bytes",
                                              "token_valid_hours",
                                              "reference_text",
                                              "threads",
                                              "capture_file",
                                              "fault_injection",
                                              "refusals_per_window",
                                              "rate_window_ms",
                                              "max_connections_per_address",
                                              "handshake_timeout_ms",
                                              "audit_max_entries",
                                              "backup_interval_hours",
                                              "backup_keep",
                                              "round_stats_keep",
                                              "metrics_listen",
                                              "database_url",
                                              "package_url",
                                              "transport_pings",
                                              "relays",
                                              "relay_listen",
                                              "artifacts_dir"};
  for (const auto& [key, value] : table) {
    if (!known.count(std::string(key.str()))) fail("{}: unknown key '{}'", path, key.str());
  }
  CoordinatorConfig config;
  read_toml_key(table, "listen", config.listen, path);
  read_toml_key(table, "state_dir", config.state_dir, path);
  read_toml_key(table, "heartbeat_interval_ms", config.heartbeat_interval_ms, path);
  read_toml_key(table, "transport_pings", config.transport_pings, path);
  read_toml_key(table, "agent_timeout_ms", config.agent_timeout_ms, path);
  read_toml_key(table, "stage_timeout_ms", config.stage_timeout_ms, path);
  read_toml_key(table, "join_timeout_ms", config.join_timeout_ms, path);
  read_toml_key(table, "join_grace_ms", config.join_grace_ms, path);
  read_toml_key(table, "report_timeout_ms", config.report_timeout_ms, path);
  read_toml_key(table, "max_message_bytes", config.max_message_bytes, path);
  read_toml_key(table, "chunk_bytes", config.chunk_bytes, path);
  read_toml_key(table, "token_valid_hours", config.token_valid_hours, path);
  read_toml_key(table, "reference_text", config.reference_text, path);
  read_toml_key(table, "threads", config.threads, path);
  read_toml_key(table, "capture_file", config.capture_file, path);
  read_toml_key(table, "fault_injection", config.fault_injection, path);
  read_toml_key(table, "refusals_per_window", config.refusals_per_window, path);
  read_toml_key(table, "rate_window_ms", config.rate_window_ms, path);
  read_toml_key(table, "max_connections_per_address", config.max_connections_per_address, path);
  read_toml_key(table, "handshake_timeout_ms", config.handshake_timeout_ms, path);
  read_toml_key(table, "audit_max_entries", config.audit_max_entries, path);
  read_toml_key(table, "backup_interval_hours", config.backup_interval_hours, path);
  read_toml_key(table, "backup_keep", config.backup_keep, path);
  read_toml_key(table, "round_stats_keep", config.round_stats_keep, path);
  read_toml_key(table, "metrics_listen", config.metrics_listen, path);
  read_toml_key(table, "database_url", config.database_url, path);
  read_toml_key(table, "package_url", config.package_url, path);
  if (!config.package_url.empty() && (config.package_url.rfind("http://", 0) != 0 || config.package_url.back() != '/'))
    fail("{}: package_url '{}': an http:// url ending in / (packages are fetched as <url><sha256>.fcpkg)", path,
         config.package_url);
  read_toml_key(table, "relays", config.relays, path);
  for (const std::string& key : config.relays) check_curve_key(key, fmt::format("{}: relays", path));
  read_toml_key(table, "relay_listen", config.relay_listen, path);
  read_toml_key(table, "artifacts_dir", config.artifacts, path);
  if (config.relays.empty() != config.relay_listen.empty())
    fail("{}: 'relays' and 'relay_listen' go together (the relays' keys, and where they connect)", path);
  if (!config.database_url.empty() && !is_postgres_url(config.database_url))
    fail(
        "{}: database_url '{}': a PostgreSQL url (postgresql://USER@HOST:PORT/DATABASE, or "
        "postgresql:///DATABASE?host=/SOCKET/DIR), "
        "or leave it out for SQLite in state_dir",
        path, redacted_url(config.database_url));
  if (config.backup_interval_hours < 0 || config.backup_interval_hours > 24 * 365)
    fail("{}: backup_interval_hours = {}: 0 (never) to 8760", path, config.backup_interval_hours);
  if (config.backup_keep < 1 || config.backup_keep > 1000) fail("{}: backup_keep = {}: 1 to 1000", path, config.backup_keep);
  if (config.round_stats_keep < 0 || config.round_stats_keep > 1000000)
    fail("{}: round_stats_keep = {}: 0 (keep all) to 1000000", path, config.round_stats_keep);
  static const std::set<std::string> faults = {
      "throw-on-agent-error", "kill-entering:evaluating", "kill-entering:quantizing", "kill-entering:done", "kill-soaking",
      "stall-quantizing",     "pause-sent:any",           "pause-sent:collecting",    "pause-sent:sharing", "pause-sent:masking",
      "pause-sent:unmasking", "pause-sent:quantizing",    "pause-sent:evaluating"};
  if (!config.fault_injection.empty() && !faults.count(config.fault_injection)) {
    fail(
        "{}: fault_injection '{}' is not one of throw-on-agent-error, kill-entering:quantizing, kill-entering:evaluating, "
        "kill-entering:done, kill-soaking, stall-quantizing, pause-sent:STAGE (collecting, sharing, masking, unmasking, "
        "quantizing, evaluating) or pause-sent:any (tests only)",
        path, config.fault_injection);
  }
  const fs::path base = fs::absolute(path).parent_path();
  config.state_dir = resolve_config_path(config.state_dir, base);
  config.reference_text = resolve_config_path(config.reference_text, base);
  config.capture_file = resolve_config_path(config.capture_file, base);
  config.artifacts = resolve_config_path(config.artifacts, base);
  if (config.agent_timeout_ms <= config.heartbeat_interval_ms) {
    fail("{}: agent_timeout_ms ({}) must exceed heartbeat_interval_ms ({})", path, config.agent_timeout_ms,
         config.heartbeat_interval_ms);
  }
  if (config.chunk_bytes > config.max_message_bytes / 2) fail("{}: chunk_bytes must be at most half of max_message_bytes", path);
  if (config.join_grace_ms < 0) fail("{}: join_grace_ms ({}) must be >= 0", path, config.join_grace_ms);
  if (config.audit_max_entries < 100) fail("{}: audit_max_entries ({}) must be at least 100", path, config.audit_max_entries);
  return config;
}

std::string CoordinatorConfig::database_name() const { return uses_postgres() ? redacted_url(database_url) : database_path(); }

}  // namespace fedcal::coordinator
