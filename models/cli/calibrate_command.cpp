#include <algorithm>
#include <cstdio>
#include <memory>

#include "common/error.h"
#include "common/file_util.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/cli/progress.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"

namespace fedcal::cli {
namespace {

struct CalibrateOptions {
  ModelOptions model;
  std::string text;
  int sequences = 128;
  int seq_len = 256;
  int mantissa_bits = HistogramLayout{}.mantissa_bits;
  std::string output;
  bool importance = false;
  bool quiet = false;
};

void run_calibrate(const CalibrateOptions& options) {
  const std::string text = read_utf8_text_file(options.text);
  LoadedModel loaded = load_model_with(options.model);
  if (!loaded.int8.empty()) fail("{}: calibration runs the FP32 model; this is an INT8 package", loaded.path);
  auto tokenizer = load_tokenizer(loaded, options.model.tokenizer);
  const std::string fingerprint = model_fingerprint(loaded.model);
  XnnRuntime runtime(resolve_threads(options.model.threads, loaded.model.config.parameter_count()));
  const std::unique_ptr<Transformer> model = Transformer::consume(std::move(loaded.model), runtime);  // one copy of the weights
  Transformer& transformer = *model;

  CalibrationOptions calibration;
  calibration.sequences = options.sequences;
  calibration.seq_len = options.seq_len;
  calibration.layout.mantissa_bits = options.mantissa_bits;
  calibration.importance = options.importance;
  Progress progress("[calibrate]", options.quiet);
  calibration.progress = [&progress](int done, int total) {
    if (done != total && done % std::max(1, total / 100) != 0) return;
    progress.update(fmt::format("{} / {} sequences", done, total), done == total);
  };
  const CalibrationStats stats = calibrate(transformer, *tokenizer, text, fingerprint, calibration);
  write_stats(stats, options.output);
  progress.update(fmt::format("{} sequences, {} tokens, {} quantization points -> {}", stats.sequences, stats.tokens,
                              stats.points.size(), options.output),
                  true);
}

struct MergeOptions {
  std::vector<std::string> inputs;
  std::string output;
};

void run_merge(const MergeOptions& options) {
  CalibrationStats merged = read_stats(options.inputs.at(0));
  for (size_t i = 1; i < options.inputs.size(); ++i) {
    const CalibrationStats next = read_stats(options.inputs[i]);
    with_context([&] { return "merging " + options.inputs[i] + " into " + options.inputs[0]; }, [&] { merged.merge(next); });
  }
  write_stats(merged, options.output);
  std::fprintf(stderr, "[merge-stats] %zu files, %llu sequences, %llu tokens -> %s\n", options.inputs.size(),
               static_cast<unsigned long long>(merged.sequences), static_cast<unsigned long long>(merged.tokens),
               options.output.c_str());
}

}  // namespace

void add_calibrate_command(CLI::App& app) {
  auto options = std::make_shared<CalibrateOptions>();
  CLI::App* command = app.add_subcommand(
      "calibrate", "Record activation statistics at every quantization point over a text (each non-empty line is one sequence)");
  add_model_options(*command, options->model);
  command->add_option("--text", options->text, "Calibration text (UTF-8)")->required()->check(CLI::ExistingFile);
  command->add_option("--sequences", options->sequences, "Sequences (lines) to run at most, in text order")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 24));
  command->add_option("--seq-len", options->seq_len, "Tokens per sequence at most")
      ->capture_default_str()
      ->check(CLI::Range(2, 1 << 20));
  command->add_option("--mantissa-bits", options->mantissa_bits, "Histogram resolution: 2^bits buckets per octave")
      ->capture_default_str()
      ->check(CLI::Range(0, 10));
  command->add_option("-o,--output", options->output, "Statistics file to write")->required();
  command->add_flag("--importance", options->importance,
                    "Also record per-channel sums of squared activations (llama.cpp's importance matrix: export --format imatrix)");
  command->add_flag("-q,--quiet", options->quiet, "No progress output");
  command->callback([options] { run_calibrate(*options); });

  auto merge = std::make_shared<MergeOptions>();
  CLI::App* merge_command = app.add_subcommand("merge-stats", "Add up statistics files recorded on the same model (exact)");
  merge_command->add_option("inputs", merge->inputs, "Statistics files")->required()->check(CLI::ExistingFile);
  merge_command->add_option("-o,--output", merge->output, "Merged statistics file")->required();
  merge_command->callback([merge] { run_merge(*merge); });
}

}  // namespace fedcal::cli
