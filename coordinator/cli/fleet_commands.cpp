// fedcal-coordinator token | agents | logs | audit
#include <fmt/format.h>

#include <memory>

#include "coordinator/cli/commands.h"
#include "coordinator/cli/report_format.h"

namespace fedcal::coordinator {

void add_fleet_commands(CLI::App& app, const CliContext& context) {
  CLI::App* token = app.add_subcommand("token", "Enrollment tokens")->require_subcommand(1);
  auto valid_hours = std::make_shared<int>(0);
  auto count = std::make_shared<int>(1);
  CLI::App* token_create = token->add_subcommand("create", "Create one-time enrollment tokens (one per agent)");
  token_create->add_option("--valid-hours", *valid_hours,
                           "Hours the token stays valid (default: token_valid_hours of the config)")
      ->check(CLI::Range(1, 24 * 365));
  token_create->add_option("--count", *count, "Tokens to create, one per line (provisioning a fleet; --json: a list)")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  token_create->callback([&context, valid_hours, count] {
    nlohmann::json request = {{"command", "token.create"}, {"count", *count}};
    if (*valid_hours > 0) request["valid_hours"] = *valid_hours;
    const auto reply = context.call(request);
    if (*count > 1) {
      std::string lines;
      for (const auto& each : reply["tokens"]) lines += each.get<std::string>() + "\n";
      context.print(reply, lines);
      return;
    }
    context.print(reply, fmt::format("{}\n(one-time, valid {} h) enroll an agent with:\n  fedcal-agent enroll --config "
                                     "AGENT.toml --token {}\nwith coordinator_key = \"{}\" in AGENT.toml\n",
                                     reply["token"].get<std::string>(), reply["valid_hours"].get<int>(),
                                     reply["token"].get<std::string>(), reply["coordinator_key"].get<std::string>()));
  });

  CLI::App* agents = app.add_subcommand("agents", "The fleet registry")->require_subcommand(1);
  struct ListOptions {
    std::string state, label, sort = "id";
    bool failing = false;
  };
  auto list_options = std::make_shared<ListOptions>();
  CLI::App* list = agents->add_subcommand(
      "list", "Enrolled agents: state, hardware, active model, last seen, labels and the last problem each reported");
  list->add_option("--state", list_options->state, "Only agents in this state")
      ->check(CLI::IsMember({"online", "offline", "revoked"}));
  list->add_option("--label", list_options->label, "Only agents with this label (device group)");
  list->add_flag("--failing", list_options->failing,
                 "Only agents with a problem: one they reported (no private text, disk full, a failed check or activation), "
                 "crashes of their active model, or silence (offline)");
  list->add_option("--sort", list_options->sort, "Order")->check(CLI::IsMember({"id", "name", "last_seen", "state"}))->capture_default_str();
  list->callback([&context, list_options] {
    nlohmann::json request = {{"command", "agents.list"}, {"sort", list_options->sort}, {"failing", list_options->failing}};
    if (!list_options->state.empty()) request["state"] = list_options->state;
    if (!list_options->label.empty()) request["label"] = list_options->label;
    const auto reply = context.call(request);
    context.print(reply, format_agents(reply));
  });
  auto revoke_id = std::make_shared<int64_t>(0);
  CLI::App* revoke = agents->add_subcommand("revoke", "Revoke an agent: its connections and messages are refused at once");
  revoke->add_option("id", *revoke_id, "Agent id")->required()->check(CLI::PositiveNumber);
  revoke->callback([&context, revoke_id] {
    context.print(context.call({{"command", "agents.revoke"}, {"id", *revoke_id}}),
                  fmt::format("agent {} revoked\n", *revoke_id));
  });

  struct LogsOptions {
    int64_t agent = 0;
    int limit = 50;
  };
  auto logs_options = std::make_shared<LogsOptions>();
  CLI::App* logs = app.add_subcommand(
      "logs", "What one agent reported to the coordinator: errors, rounds it left or declined and why, exclusions (newest first)");
  logs->add_option("--agent", logs_options->agent, "Agent id (see `agents list`)")->required()->check(CLI::PositiveNumber);
  logs->add_option("--limit", logs_options->limit, "Entries")->capture_default_str()->check(CLI::Range(1, 100000));
  logs->callback([&context, logs_options] {
    const auto reply = context.call(
        {{"command", "audit"}, {"actor", "agent " + std::to_string(logs_options->agent)}, {"limit", logs_options->limit}});
    context.print(reply, reply["audit"].empty() ? fmt::format("agent {} has reported nothing\n", logs_options->agent)
                                                : format_audit(reply));
  });

  auto audit_limit = std::make_shared<int>(50);
  CLI::App* audit = app.add_subcommand("audit", "The latest audit log entries (enrollments, refusals, rounds)");
  audit->add_option("--limit", *audit_limit, "Entries")->capture_default_str()->check(CLI::Range(1, 100000));
  audit->callback([&context, audit_limit] {
    const auto reply = context.call({{"command", "audit"}, {"limit", *audit_limit}});
    context.print(reply, format_audit(reply));
  });
}

}  // namespace fedcal::coordinator
