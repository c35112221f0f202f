// The coordinator's read-only status page (GET / on metrics_listen): the fleet, its failing agents
// and why, the current rollout with a chart of its health, and the latest rounds. One HTML document
// rendered on the server from the same JSON the admin commands answer, with no script (the endpoint
// forbids them) and a refresh every 10 s. Everything an agent or operator wrote (names, labels,
// problems, reasons) is HTML-escaped and has its control characters escaped.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>

namespace fedcal::coordinator {

struct StatusPageInput {
  nlohmann::json coordinator;                         // the admin "status" reply
  nlohmann::json agents = nlohmann::json::array();    // agents.list's "agents"
  nlohmann::json rounds = nlohmann::json::array();    // the latest rounds as round.status shows them, newest first
  nlohmann::json rollout;                             // rollout.status of the active or last rollout; null if none
  int64_t now_ms = 0;                                 // wall clock
};

// At most this many agents are listed in each table; the page says how many more there are and
// which command lists them.
constexpr size_t kStatusPageMaxAgentRows = 500;

std::string render_status_page(const StatusPageInput& input);

}  // namespace fedcal::coordinator
