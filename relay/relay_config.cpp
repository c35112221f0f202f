#include "relay/relay_config.h"

#include <toml++/toml.h>

#include <filesystem>
#include <limits>
#include <set>

#include "common/error.h"
#include "transport/curve.h"

namespace fedcal::relay {
namespace {
namespace fs = std::filesystem;

template <typename T>
void read_key(const toml::table& table, const std::string& key, T& out, const std::string& path) {
  const toml::node* node = table.get(key);
  if (node == nullptr) return;
  if constexpr (std::is_same_v<T, std::string>) {
    if (!node->is_string()) fail("{}: '{}' must be a string", path, key);
    out = node->value<std::string>().value();
  } else if constexpr (std::is_same_v<T, bool>) {
    if (!node->is_boolean()) fail("{}: '{}' must be true or false", path, key);
    out = node->value<bool>().value();
  } else if constexpr (std::is_same_v<T, std::vector<std::string>>) {
    const toml::array* list = node->as_array();
    if (list == nullptr) fail("{}: '{}' must be an array of strings", path, key);
    for (const auto& item : *list) {
      if (!item.is_string()) fail("{}: '{}' must be an array of strings", path, key);
      out.push_back(item.value<std::string>().value());
    }
  } else {
    if (!node->is_integer()) fail("{}: '{}' must be an integer", path, key);
    const int64_t value = node->value<int64_t>().value();
    if (value <= 0 || value > std::numeric_limits<T>::max()) fail("{}: '{}' = {} is out of range", path, key, value);
    out = static_cast<T>(value);
  }
}

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
                                              "transport_pings"};
  for (const auto& [key, value] : table) {
    if (!known.count(std::string(key.str()))) fail("{}: unknown key '{}'", path, key.str());
  }
  RelayConfig config;
  read_key(table, "listen", config.listen, path);
  read_key(table, "coordinator", config.coordinator, path);
  read_key(table, "standby_coordinators", config.standby_coordinators, path);
  read_key(table, "coordinator_key", config.coordinator_key, path);
  read_key(table, "state_dir", config.state_dir, path);
  read_key(table, "presence_interval_ms", config.presence_interval_ms, path);
  read_key(table, "coordinator_timeout_ms", config.coordinator_timeout_ms, path);
  read_key(table, "max_connections_per_address", config.max_connections_per_address, path);
  read_key(table, "handshake_timeout_ms", config.handshake_timeout_ms, path);
  read_key(table, "max_message_bytes", config.max_message_bytes, path);
  read_key(table, "transport_pings", config.transport_pings, path);
  if (config.coordinator.empty()) fail("{}: 'coordinator' is missing (the coordinator's relay_listen endpoint)", path);
  check_endpoint(config.coordinator, path, "coordinator");
  for (const std::string& endpoint : config.standby_coordinators) check_endpoint(endpoint, path, "standby_coordinators");
  check_curve_key(config.coordinator_key, path + ": coordinator_key");
  if (config.presence_interval_ms * 2 > config.coordinator_timeout_ms)
    fail("{}: presence_interval_ms ({}) must be at most half of coordinator_timeout_ms ({})", path, config.presence_interval_ms,
         config.coordinator_timeout_ms);
  config.state_dir = (fs::path(config.state_dir).is_absolute() ? fs::path(config.state_dir)
                                                               : fs::absolute(path).parent_path() / config.state_dir)
                         .lexically_normal()
                         .string();
  return config;
}

}  // namespace fedcal::relay
