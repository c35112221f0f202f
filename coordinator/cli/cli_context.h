// What every fedcal-coordinator subcommand shares: the config file and the --json flag (parsed before
// any callback runs), the admin-socket call and the printing of a reply.
#pragma once

#include <nlohmann/json.hpp>

#include <string>

#include "coordinator/coordinator_config.h"

namespace fedcal::coordinator {

struct CliContext {
  std::string config = "/etc/fedcal/coordinator.toml";
  bool json = false;

  CoordinatorConfig load() const { return CoordinatorConfig::load(config); }
  // One request to the running daemon's admin socket.
  nlohmann::json call(const nlohmann::json& request) const;
  // `reply` as JSON with --json, else `human`.
  void print(const nlohmann::json& reply, const std::string& human) const;
};

}  // namespace fedcal::coordinator
