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
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "fedcal-model: error: out of memory\n");
    return fedcal::process_exit_code(fedcal::ErrorKind::kIo);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fedcal-model: error: %s\n", error.what());
    return fedcal::process_exit_code(fedcal::kind_of(error));
  } catch (...) {
    std::fprintf(stderr, "fedcal-model: error: an exception of unknown type\n");
    return fedcal::process_exit_code(fedcal::ErrorKind::kInternal);
  }
  return 0;
}
