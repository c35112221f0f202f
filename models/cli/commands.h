// The subcommands of fedcal-model. Each registers its options on `app` and runs when selected.
#pragma once

#include <CLI/CLI.hpp>

namespace fedcal::cli {

void add_generate_command(CLI::App& app);
void add_eval_command(CLI::App& app);
void add_synth_command(CLI::App& app);
void add_inspect_command(CLI::App& app);
void add_bench_command(CLI::App& app);
// calibrate and merge-stats
void add_calibrate_command(CLI::App& app);
void add_smooth_command(CLI::App& app);
// quantize and keygen
void add_package_commands(CLI::App& app);
void add_export_command(CLI::App& app);

}  // namespace fedcal::cli
