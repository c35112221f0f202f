// The subcommands of fedcal-coordinator, one file per group. Each registers its options on `app`
// and runs when selected; `context` (config file, --json) outlives the parse.
#pragma once

#include <CLI/CLI.hpp>

#include "coordinator/cli/cli_context.h"

namespace fedcal::coordinator {

// serve, keys, shutdown
void add_daemon_commands(CLI::App& app, const CliContext& context);
// token, agents, audit
void add_fleet_commands(CLI::App& app, const CliContext& context);
// models import | list
void add_models_commands(CLI::App& app, const CliContext& context);
// round start | status | report | abort
void add_round_commands(CLI::App& app, const CliContext& context);
// rollout start | status | pause | resume | abort | rollback
void add_rollout_commands(CLI::App& app, const CliContext& context);

}  // namespace fedcal::coordinator
