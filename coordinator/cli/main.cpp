// fedcal-coordinator: the daemon (`serve`) and the operator's CLI, which talks to the running daemon
// over its local admin socket. One file per group of subcommands (commands.h).
#include <CLI/CLI.hpp>

#include "common/command_line.h"
#include "coordinator/cli/commands.h"

int main(int argc, char** argv) {
  using namespace fedcal::coordinator;
  CLI::App app{"fedcal coordinator: federated INT8 calibration rounds over a fleet of edge agents"};
  app.require_subcommand(1);
  CliContext context;
  app.add_option("-c,--config", context.config, "Coordinator config file (TOML, see deploy/coordinator.toml)")
      ->capture_default_str();
  app.add_flag("--json", context.json, "Print replies as JSON for scripts (before or after the subcommand)");
  app.fallthrough();  // -c and --json are accepted after the subcommand too
  add_daemon_commands(app, context);
  add_fleet_commands(app, context);
  add_models_commands(app, context);
  add_round_commands(app, context);
  add_rollout_commands(app, context);
  return fedcal::run_command_line<CLI::ParseError>(app, "fedcal-coordinator", argc, argv);
}
