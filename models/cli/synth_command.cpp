#include <cstdio>
#include <memory>

#include "common/error.h"
#include "models/cli/commands.h"
#include "models/format/hf_checkpoint.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/synth.h"

namespace fedcal::cli {
namespace {

struct SynthOptions {
  std::string preset;
  uint64_t seed = 1;
  std::string output;
  std::string format = "llama2c";
  std::string dtype = "f32";
  bool list = false;
};

void run_synth(const SynthOptions& options) {
  if (options.list) {
    for (const SynthPreset& preset : synth_presets()) {
      std::printf("%-16s %s (%.1f M parameters)\n", preset.name.c_str(), preset.description.c_str(),
                  static_cast<double>(preset.config.parameter_count()) / 1e6);
    }
    return;
  }
  if (options.preset.empty() || options.output.empty()) fail("synth needs --preset and -o (or --list)");
  const SynthPreset& preset = find_synth_preset(options.preset);
  std::fprintf(stderr, "[synth] %s: %s, %.1f M parameters, seed %llu\n", preset.name.c_str(), preset.config.describe().c_str(),
               static_cast<double>(preset.config.parameter_count()) / 1e6, static_cast<unsigned long long>(options.seed));
  const Model model = synthesize_model(preset.config, options.seed);
  if (options.format == "hf") {
    const TensorDtype dtype = options.dtype == "f16"    ? TensorDtype::kF16
                              : options.dtype == "bf16" ? TensorDtype::kBF16
                                                        : TensorDtype::kF32;
    write_hf_checkpoint(model, options.output, dtype);
  } else {
    if (options.dtype != "f32") fail("llama2.c checkpoints are FP32 only; use --format hf for --dtype {}", options.dtype);
    write_llama2c_checkpoint(model, options.output,
                             options.format == "llama2c-legacy" ? Llama2cVersion::kLegacy : Llama2cVersion::kVersion1);
  }
  std::fprintf(stderr, "[synth] wrote %s\n", options.output.c_str());
}

}  // namespace

void add_synth_command(CLI::App& app) {
  auto options = std::make_shared<SynthOptions>();
  CLI::App* command =
      app.add_subcommand("synth", "Write a random-weights checkpoint of a known shape (for tests and benchmarks)");
  command->add_option("--preset", options->preset, "Shape: tiny, tiny-mha, small, smollm-135m, tinyllama-1.1b (see --list)");
  command->add_option("--seed", options->seed, "Random seed")->capture_default_str();
  command->add_option("-o,--output", options->output, "Output file (llama2.c) or folder (hf)");
  command->add_option("--format", options->format, "llama2c (version 1), llama2c-legacy or hf")
      ->capture_default_str()
      ->check(CLI::IsMember({"llama2c", "llama2c-legacy", "hf"}));
  command->add_option("--dtype", options->dtype, "Tensor type of an hf checkpoint: f32, f16 or bf16")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16"}));
  command->add_flag("--list", options->list, "List the presets");
  command->callback([options] { run_synth(*options); });
}

}  // namespace fedcal::cli
