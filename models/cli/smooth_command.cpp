#include <nlohmann/json.hpp>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <memory>

#include "common/error.h"
#include "common/file_util.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/format/model_package.h"
#include "models/quant/calibration.h"
#include "models/quant/smoothing.h"

namespace fedcal::cli {
namespace {

struct SmoothOptions {
  ModelOptions model;
  std::string stats;
  std::string text;
  std::vector<double> alphas = SmoothingOptions{}.alphas;
  bool per_tensor = false;
  int weight_bits = 8;
  Int4Grid int4_grid = Int4Grid::kNonUniform;
  size_t windows = 1;
  std::string output;
  bool json = false;
};

void run_smooth(const SmoothOptions& options) {
  LoadedModel loaded = load_model_with(options.model);
  if (!loaded.int8.empty()) fail("{}: smoothing folds into FP32 weights; this is an INT8 package", loaded.path);
  const CalibrationStats stats = read_stats(options.stats);
  if (stats.model_sha256 != model_fingerprint(loaded.model)) fail("{}: statistics were recorded on another model than {}", options.stats, loaded.path);
  if (!stats.has_importance()) fail("{}: no importance sums (record them with calibrate --importance)", options.stats);
  auto tokenizer = load_tokenizer(loaded, options.model.tokenizer);
  const PackageTokenizer package_tokenizer = find_tokenizer(loaded, options.model.tokenizer).file;
  const std::vector<int> tokens = tokenizer->encode(read_utf8_text_file(options.text), true);
  XnnRuntime runtime(resolve_threads(options.model.threads, loaded.model.config.parameter_count()));
  SmoothingOptions smoothing;
  smoothing.alphas = options.alphas;
  smoothing.per_channel_weights = !options.per_tensor;
  smoothing.weight_bits = options.weight_bits;
  smoothing.grid = options.int4_grid;
  smoothing.windows = options.windows;
  const std::vector<SiteSmoothing> sites = with_context([&] { return options.stats; },
                                                        [&] { return smooth_model(loaded.model, stats, tokens, runtime, smoothing); });
  PackageProvenance provenance;
  provenance.source_model_sha256 = model_fingerprint(loaded.model);
  write_model_package(options.output, loaded.model, {}, package_tokenizer, provenance, {});

  const int smoothed = static_cast<int>(std::count_if(sites.begin(), sites.end(), [](const SiteSmoothing& site) { return site.alpha.has_value(); }));
  if (options.json) {
    std::printf("%s\n", nlohmann::json{{"output", options.output}, {"sites", smoothing_sites_json(sites)}, {"smoothed", smoothed}}.dump(2).c_str());
    return;
  }
  std::printf("%-22s %-6s %-14s %s\n", "site", "alpha", options.weight_bits == 4 ? "4-bit error" : "INT8 error",
              "with smoothing");
  for (const SiteSmoothing& site : sites) {
    std::printf("%-22s %-6s %-14.4g %.4g\n", smoothing_site_name(site.layer, site.site).c_str(),
                site.alpha ? fmt::format("{:.2f}", *site.alpha).c_str() : "none", site.error_without, site.error_with);
  }
  std::fprintf(stderr, "[smooth] %d of %zu sites %s -> %s (FP32 package, %.2f MB): calibrate and quantize it as any model%s\n",
               smoothed, sites.size(), options.weight_bits == 4 ? "scaled for 4-bit weights (AWQ)" : "smoothed",
               options.output.c_str(), std::filesystem::file_size(options.output) / 1e6,
               options.weight_bits == 4 ? " (--weight-bits 4)" : "");
}

}  // namespace

void add_smooth_command(CLI::App& app) {
  auto options = std::make_shared<SmoothOptions>();
  CLI::App* command = app.add_subcommand(
      "smooth",
      "Fold outlier migration (SmoothQuant) into an FP32 model: per site (each layer's attn_in, attn_out, ffn_in, ffn_hidden) "
      "the strength whose static INT8 error on --text is smallest, from the importance sums of --stats; writes an FP32 "
      "package with the same outputs, to calibrate and quantize (docs/QUANTIZATION.md). With --weight-bits 4: AWQ's "
      "input-channel scaling, chosen by the 4-bit error");
  add_model_options(*command, options->model);
  command->add_option("--stats", options->stats, "Statistics with importance sums (calibrate --importance), recorded on --model")
      ->required()
      ->check(CLI::ExistingFile);
  command
      ->add_option("--text", options->text,
                   "Text whose activations the error is measured on (its first --windows context windows)")
      ->required()
      ->check(CLI::ExistingFile);
  command->add_option("--alphas", options->alphas, "Candidate migration strengths in [0, 1] (no smoothing is always a candidate)")
      ->delimiter(',')
      ->check(CLI::Range(0.0, 1.0))
      ->capture_default_str();
  command->add_flag("--per-tensor", options->per_tensor, "Measure the error with per-tensor weights (default: per channel)");
  command
      ->add_option("--weight-bits", options->weight_bits,
                   "8: SmoothQuant for static INT8; 4: AWQ for 4-bit weights (factors a^alpha, the error of importance-weighted "
                   "4-bit rounding with activations per block of 32)")
      ->check(CLI::IsMember({8, 4}))
      ->capture_default_str();
  command
      ->add_option("--int4-grid", options->int4_grid, "With --weight-bits 4: the grid the error is measured on (as quantize's)")
      ->transform(CLI::CheckedTransformer(int4_grid_choices(), CLI::ignore_case))
      ->default_str(int4_grid_name(Int4Grid::kNonUniform));
  command->add_option("--windows", options->windows, "Context windows of --text the error is measured on")
      ->check(CLI::PositiveNumber)
      ->capture_default_str();
  command->add_option("-o,--output", options->output, "FP32 package to write")->required();
  command->add_flag("--json", options->json, "Print the choices as one JSON object");
  command->callback([options] { run_smooth(*options); });
}

}  // namespace fedcal::cli
