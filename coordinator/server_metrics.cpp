// The coordinator's Prometheus metrics (GET /metrics, see metrics_endpoint.h): rendered on the event
// loop from the registry, the active round and rollout, and the loop's own counters.
#include <map>
#include <set>
#include <tuple>

#include "common/clock.h"
#include "coordinator/server.h"

namespace fedcal::coordinator {
namespace {

// A label value in the exposition format: backslash, double quote and newline escaped.
std::string label(const std::string& value) {
  std::string out;
  for (const char c : value) {
    if (c == '\\' || c == '"') out += '\\';
    if (c == '\n') {
      out += "\\n";
      continue;
    }
    out += c;
  }
  return out;
}

void family(std::string& out, const char* name, const char* type, const char* help) {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name, help, name, type);
}

}  // namespace

std::string Server::metrics_text() {
  std::string out;
  const int64_t now = wall_ms();

  std::map<std::pair<std::string, std::string>, int> agents;  // (state, arch)
  int failing = 0;
  for (const AgentRecord& agent : store_.agents()) {
    const AgentView view = agent_view(agent, now);
    const nlohmann::json profile = nlohmann::json::parse(agent.profile_json, nullptr, false);
    const std::string arch = profile.is_object() ? profile.value("arch", "unknown") : "unknown";
    ++agents[{view.state, arch}];
    failing += view.problems.empty() ? 0 : 1;
  }
  family(out, "fedcal_agents", "gauge", "Enrolled agents by state and architecture.");
  for (const auto& [key, count] : agents)
    out += fmt::format("fedcal_agents{{state=\"{}\",arch=\"{}\"}} {}\n", key.first, label(key.second), count);
  family(out, "fedcal_agents_failing", "gauge", "Agents with a problem: reported, crashes of their model, or silence.");
  out += fmt::format("fedcal_agents_failing {}\n", failing);

  std::map<std::string, int> rounds;
  const RoundRecord* last_finished = nullptr;
  const std::vector<RoundRecord> records = store_.rounds();
  for (const RoundRecord& record : records) {
    ++rounds[std::string(name(record.stage))];
    if (is_final(record.stage) && (!last_finished || record.id > last_finished->id)) last_finished = &record;
  }
  family(out, "fedcal_rounds", "gauge", "Rounds by stage (done and failed are outcomes).");
  for (const auto& [stage, count] : rounds) out += fmt::format("fedcal_rounds{{stage=\"{}\"}} {}\n", stage, count);
  family(out, "fedcal_round_active", "gauge", "The running round and its stage (1), if any.");
  if (round_ && !round_->finished())
    out += fmt::format("fedcal_round_active{{round=\"{}\",stage=\"{}\"}} 1\n", round_->id(), name(round_->stage()));
  family(out, "fedcal_round_stage_seconds", "gauge", "How long each stage of the last finished round took.");
  if (last_finished) {
    const nlohmann::json report = nlohmann::json::parse(last_finished->report_json, nullptr, false);
    if (report.is_object() && report.contains("stage_ms") && report["stage_ms"].is_object()) {
      for (const auto& [stage, ms] : report["stage_ms"].items()) {
        if (ms.is_number())
          out += fmt::format("fedcal_round_stage_seconds{{round=\"{}\",stage=\"{}\"}} {:.3f}\n", last_finished->id, label(stage),
                             ms.get<double>() / 1000);
      }
    }
  }

  family(out, "fedcal_database_statements_total", "counter",
         "SQL statements the daemon's store ran since the start (heartbeats cost none; last-seen times are written in batches).");
  out += fmt::format("fedcal_database_statements_total {}\n", store_.database().statements_run());
  family(
      out, "fedcal_database_commits_total", "counter",
      "Commits the daemon's store made since the start (each an fsync on SQLite; a loop turn's participant statuses are one).");
  out += fmt::format("fedcal_database_commits_total {}\n", store_.database().commits());
  family(out, "fedcal_package_chunk_bytes_total", "counter",
         "Package bytes the coordinator sent in chunks itself (agents with a package_url fetch over HTTP instead).");
  out += fmt::format("fedcal_package_chunk_bytes_total {}\n", counters_.package_bytes_sent);
  family(out, "fedcal_agent_messages_received_total", "counter", "Messages received from agents since the start.");
  out += fmt::format("fedcal_agent_messages_received_total {}\n", counters_.messages_received);
  family(out, "fedcal_relay_presence_total", "counter",
         "Agents' presence reported by relays since the start (their heartbeats answered at the relay).");
  out += fmt::format("fedcal_relay_presence_total {}\n", relay_presence_entries_);
  family(out, "fedcal_agent_bytes_received_total", "counter", "Bytes received from agents since the start.");
  out += fmt::format("fedcal_agent_bytes_received_total {}\n", counters_.bytes_received);
  family(out, "fedcal_agent_messages_sent_total", "counter", "Messages sent to agents since the start.");
  out += fmt::format("fedcal_agent_messages_sent_total {}\n", counters_.messages_sent);
  family(out, "fedcal_agent_messages_dropped_total", "counter",
         "Messages to agents not delivered since the start: the agent was gone, or its send queue full (it does not read).");
  out += fmt::format("fedcal_agent_messages_dropped_total {}\n", counters_.dropped);
  family(out, "fedcal_agent_bytes_sent_total", "counter", "Bytes sent to agents since the start.");
  out += fmt::format("fedcal_agent_bytes_sent_total {}\n", counters_.bytes_sent);
  family(out, "fedcal_refused_total", "counter", "Refused messages, connections and enrollments since the start.");
  out += fmt::format("fedcal_refused_total {}\n", counters_.refused);
  if (http_) {
    family(out, "fedcal_http_connections_evicted_total", "counter",
           "HTTP connections closed unanswered to make room for new ones (at the limits in all or per address).");
    out += fmt::format("fedcal_http_connections_evicted_total {}\n", http_->evicted());
  }

  family(out, "fedcal_rollout_agents", "gauge", "Agents of the current (or last) rollout by wave and status.");
  family(out, "fedcal_rollout_stage", "gauge", "The current (or last) rollout and its stage (1).");
  if (rollout_) {
    const nlohmann::json status = rollout_->status();
    std::map<std::pair<int, std::string>, int> by_wave;
    for (const auto& agent : status["agents"]) ++by_wave[{agent["wave"].get<int>() + 1, agent["status"].get<std::string>()}];
    for (const auto& [key, count] : by_wave) {
      out += fmt::format("fedcal_rollout_agents{{rollout=\"{}\",wave=\"{}\",status=\"{}\"}} {}\n", rollout_->id(), key.first,
                         key.second, count);
    }
    out += fmt::format("fedcal_rollout_stage{{rollout=\"{}\",stage=\"{}\"}} 1\n", rollout_->id(), name(rollout_->stage()));
  }
  return out;
}

}  // namespace fedcal::coordinator
