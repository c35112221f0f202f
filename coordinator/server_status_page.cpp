// The coordinator's status page (GET /, see status_page.h): gathered on the event loop from the
// replies the admin commands give, so the page and the CLI never disagree.
#include "common/clock.h"
#include "coordinator/server.h"
#include "coordinator/status_page.h"

namespace fedcal::coordinator {

namespace {
constexpr size_t kStatusPageRounds = 10;
}  // namespace

std::string Server::status_page() {
  StatusPageInput input;
  input.now_ms = wall_ms();
  input.coordinator = {{"listen", config_.listen}, {"agent_connections", connection_guard_->open()}};
  input.agents = agents_list(nlohmann::json::object())["agents"];
  const std::vector<RoundRecord> rounds = store_.rounds();
  for (size_t i = 0; i < rounds.size() && i < kStatusPageRounds; ++i) input.rounds.push_back(round_json(rounds[rounds.size() - 1 - i].id));
  input.rollout = rollout_json();
  return render_status_page(input);
}

}  // namespace fedcal::coordinator
