// fedcal-model: run, evaluate, inspect, benchmark and synthesize Llama-family models.
#include <cstdio>

#include "common/error.h"
#include "models/cli/commands.h"

int main(int argc, char** argv) {
  CLI::App app{"fedcal-model: run, evaluate, inspect and benchmark Llama-family models (llama2.c and Hugging Face formats)"};
  app.require_subcommand(1);
  fedcal::cli::add_generate_command(app);
  fedcal::cli::add_eval_command(app);
  fedcal::cli::add_synth_command(app);
  fedcal::cli::add_inspect_command(app);
  fedcal::cli::add_bench_command(app);
  fedcal::cli::add_calibrate_command(app);
  fedcal::cli::add_package_commands(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& error) {
    return app.exit(error);
  } catch (const fedcal::Error& error) {
    std::fprintf(stderr, "fedcal-model: error: %s\n", error.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "fedcal-model: error: out of memory\n");
    return 1;
  }
  return 0;
}
