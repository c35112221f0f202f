#include "edge_agent/agent_config.h"

#include <toml++/toml.h>
#include <unistd.h>

#include <filesystem>
#include <set>

#include "common/error.h"
#include "transport/curve.h"

namespace fedcal::edge_agent {
namespace {
namespace fs = std::filesystem;

std::string resolve(const std::string& value, const fs::path& base) {
  if (value.empty() || fs::path(value).is_absolute()) return value;
  return (base / value).lexically_normal().string();
}

}  // namespace

AgentConfig AgentConfig::load(const std::string& path) {
  toml::table table;
  try {
    table = toml::parse_file(path);
  } catch (const toml::parse_error& error) {
    fail("{}: line {}: {}", path, error.source().begin.line, error.description());
  }
  static const std::set<std::string> known = {"coordinator",
                                              "standby_coordinators",
                                              "transport_ttl",
                                              "transport_ping_ms",
                                              "coordinator_key",
                                              "state_dir",
                                              "data_dir",
                                              "name",
                                              "labels",
                                              "threads",
                                              "heldout_fraction",
                                              "eval_max_tokens",
                                              "decode_tokens",
                                              "decode_runs",
                                              "reconnect_interval_max_ms",
                                              "package_url",
                                              "coordinator_timeout_ms",
                                              "partial_download_max_age_hours",
                                              "disk_budget_mb",
                                              "serve_port",
                                              "enroll_token",
                                              "fault_injection"};
  for (const auto& [key, value] : table) {
    if (!known.count(std::string(key.str()))) fail("{}: unknown key '{}'", path, key.str());
  }
  AgentConfig config;
  auto text = [&](const char* key, std::string& out) {
    if (const toml::node* node = table.get(key)) {
      if (!node->is_string()) fail("{}: '{}' must be a string", path, key);
      out = node->value<std::string>().value();
    }
  };
  auto integer = [&](const char* key, int& out, int low, int high) {
    if (const toml::node* node = table.get(key)) {
      const auto value = node->value<int64_t>();
      if (!node->is_integer() || *value < low || *value > high)
        fail("{}: '{}' must be an integer in [{}, {}]", path, key, low, high);
      out = static_cast<int>(*value);
    }
  };
  text("coordinator", config.coordinator);
  text("coordinator_key", config.coordinator_key);
  text("state_dir", config.state_dir);
  text("data_dir", config.data_dir);
  text("name", config.name);
  text("enroll_token", config.enroll_token);
  text("package_url", config.package_url);
  if (!config.package_url.empty() && (config.package_url.rfind("http://", 0) != 0 || config.package_url.back() != '/'))
    fail("{}: package_url '{}': an http:// url ending in / (packages are fetched as <url><sha256>.fcpkg)", path,
         config.package_url);
  text("fault_injection", config.fault_injection);
  if (!config.fault_injection.empty() && config.fault_injection != "exit-after-join" &&
      config.fault_injection != "exit-after-shares" && config.fault_injection != "exit-after-masked-input" &&
      config.fault_injection != "exit-after-checks" && config.fault_injection != "exit-after-activation") {
    fail(
        "{}: fault_injection '{}' is not one of exit-after-join, exit-after-shares, exit-after-masked-input, "
        "exit-after-checks, exit-after-activation",
        path, config.fault_injection);
  }
  auto strings = [&](const char* key, std::vector<std::string>& out) {
    if (const toml::node* node = table.get(key)) {
      const toml::array* list = node->as_array();
      if (list == nullptr) fail("{}: '{}' must be an array of strings", path, key);
      for (const auto& item : *list) {
        if (!item.is_string()) fail("{}: '{}' must be an array of strings", path, key);
        out.push_back(item.value<std::string>().value());
      }
    }
  };
  if (const toml::node* node = table.get("transport_ttl")) {
    if (!node->is_boolean()) fail("{}: 'transport_ttl' must be true or false", path);
    config.transport_ttl = node->value<bool>().value();
  }
  strings("labels", config.labels);
  strings("standby_coordinators", config.standby_coordinators);
  for (const std::string& endpoint : config.standby_coordinators) {
    if (endpoint.rfind("tcp://", 0) != 0) fail("{}: standby_coordinators: '{}' is not a tcp:// endpoint", path, endpoint);
  }
  integer("threads", config.threads, 0, 1024);
  integer("eval_max_tokens", config.eval_max_tokens, 16, 1 << 24);
  integer("decode_tokens", config.decode_tokens, 1, 4096);
  integer("decode_runs", config.decode_runs, 1, 100);
  integer("reconnect_interval_max_ms", config.reconnect_interval_max_ms, 100, 3600000);
  integer("transport_ping_ms", config.transport_ping_ms, 100, 600000);
  integer("coordinator_timeout_ms", config.coordinator_timeout_ms, 1000, 3600000);
  integer("partial_download_max_age_hours", config.partial_download_max_age_hours, 1, 24 * 365);
  integer("disk_budget_mb", config.disk_budget_mb, 0, 1 << 24);
  integer("serve_port", config.serve_port, 0, 65535);
  if (const toml::node* node = table.get("heldout_fraction")) {
    const auto value = node->value<double>();
    if (!value || *value < 0 || *value >= 1) fail("{}: 'heldout_fraction' must be a number in [0, 1)", path);
    config.heldout_fraction = *value;
  }
  if (config.coordinator_key.empty()) fail("{}: 'coordinator_key' is required (`fedcal-coordinator keys` prints it)", path);
  with_context([&] { return path; }, [&] { check_curve_key(config.coordinator_key, "coordinator_key"); });
  if (config.name.empty()) {
    char host[256] = {};
    ::gethostname(host, sizeof(host) - 1);
    config.name = host;
  }
  const fs::path base = fs::absolute(path).parent_path();
  config.state_dir = resolve(config.state_dir, base);
  config.data_dir = resolve(config.data_dir, base);
  return config;
}

}  // namespace fedcal::edge_agent
