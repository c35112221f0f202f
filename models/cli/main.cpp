// fedcal-model: run, evaluate, inspect, benchmark and synthesize Llama-family models.
#include <cstdio>

#include "common/command_line.h"
#include "models/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"fedcal-model: run, evaluate, inspect and benchmark Llama-family models (llama2.c, Hugging Face, GGUF and fedcal packages)"};
  app.require_subcommand(1);
  fedcal::cli::add_generate_command(app);
  fedcal::cli::add_eval_command(app);
  fedcal::cli::add_synth_command(app);
  fedcal::cli::add_inspect_command(app);
  fedcal::cli::add_bench_command(app);
  fedcal::cli::add_calibrate_command(app);
  fedcal::cli::add_smooth_command(app);
  fedcal::cli::add_package_commands(app);
  fedcal::cli::add_export_command(app);
  return fedcal::run_command_line<CLI::ParseError>(app, "fedcal-model", argc, argv);
}
