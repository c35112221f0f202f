#include "relay/relay_config.h"

#include <toml++/toml.h>

#include <filesystem>
#include <set>

#include "common/error.h"
#include "common/toml_keys.h"
#include "transport/curve.h"

namespace fedcal::relay {
namespace {
namespace fs = std::filesystem;

void check_endpoint(const std::string& endpoint, const std::string& path, const std::string& key) {
  if (endpoint.rfind("tcp://", 0) != 0) fail("{}: {}: '{}' is not a tcp:// endpoint", path, key, endpoint);
}

}  // namespace

RelayConfig RelayConfig::load(const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& error) {
    fail("{}: line {}: {}", path, error.source().begin.line, error.description());
  }
  static const std::set<std::string> known = {"listen",
                                              "coordinator",
                                              "standby_coordinators",
                                              "coordinator_key",
                                              "state_dir",
                                              "presence_interval_ms",
                                              "coordinator_timeout_ms",
                                              "max_connections_per_address",
                                              "handshake_timeout_ms",
                                              "max_message_bytes",
                                              "transport_pings",
                                              "capture_file"};
  for (const auto& [key, value] : table) {
    if (!known.count(std::string(key.str()))) fail("{}: unknown key '{}'", path, key.str());
  }
  RelayConfig config;
  read_toml_key(table, "listen", config.listen, path);
  read_toml_key(table, "coordinator", config.coordinator, path);
  read_toml_key(table, "standby_coordinators", config.standby_coordinators, path);
  read_toml_key(table, "coordinator_key", config.coordinator_key, path);
  read_toml_key(table, "state_dir", config.state_dir, path);
  read_toml_key(table, "presence_interval_ms", config.presence_interval_ms, path);
  read_toml_key(table, "coordinator_timeout_ms", config.coordinator_timeout_ms, path);
  read_toml_key(table, "max_connections_per_address", config.max_connections_per_address, path);
  read_toml_key(table, "handshake_timeout_ms", config.handshake_timeout_ms, path);
  read_toml_key(table, "max_message_bytes", config.max_message_bytes, path);
  read_toml_key(table, "transport_pings", config.transport_pings, path);
  read_toml_key(table, "capture_file", config.capture_file, path);
  if (config.coordinator.empty()) fail("{}: 'coordinator' is missing (the coordinator's relay_listen endpoint)", path);
  check_endpoint(config.coordinator, path, "coordinator");
  for (const std::string& endpoint : config.standby_coordinators) check_endpoint(endpoint, path, "standby_coordinators");
  check_curve_key(config.coordinator_key, path + ": coordinator_key");
  if (config.presence_interval_ms * 2 > config.coordinator_timeout_ms)
    fail("{}: presence_interval_ms ({}) must be at most half of coordinator_timeout_ms ({})", path, config.presence_interval_ms,
         config.coordinator_timeout_ms);
  config.state_dir = resolve_config_path(config.state_dir, fs::absolute(path).parent_path());
  if (!config.capture_file.empty())
    config.capture_file = resolve_config_path(config.capture_file, fs::absolute(path).parent_path());
  return config;
}

}  // namespace fedcal::relay
