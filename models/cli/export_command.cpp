#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "common/file_util.h"
#include "models/format/gguf_model.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/importance.h"

namespace fedcal::cli {
namespace {

struct ExportOptions {
  ModelOptions model;
  std::string format = "gguf";
  std::string type = "f32";
  std::string name;
  std::optional<std::string> stats;
  std::string output;
  bool json = false;
};

// llama.cpp's importance matrix from statistics recorded with importance sums.
void run_imatrix_export(const ExportOptions& options) {
  if (!options.stats) fail("--format imatrix needs --stats (recorded with calibrate --importance)");
  const LoadedModel loaded = load_model_with(options.model);
  const CalibrationStats stats = read_stats(*options.stats);
  const Imatrix imatrix = imatrix_from_stats(stats, loaded.model.config, options.name.empty() ? *options.stats : options.name);
  const std::vector<std::byte> bytes = serialize_imatrix(imatrix);
  write_file_atomically(options.output, bytes);
  if (options.json) {
    const nlohmann::json out = {{"format", "imatrix"},     {"output", options.output},          {"bytes", bytes.size()},
                                {"entries", imatrix.entries.size()}, {"ncall", imatrix.last_call}, {"tokens", stats.tokens}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::fprintf(stderr, "[export] %s -> %s: llama.cpp imatrix, %zu matrices, %d sequences, %llu tokens\n", options.stats->c_str(),
               options.output.c_str(), imatrix.entries.size(), imatrix.last_call, static_cast<unsigned long long>(stats.tokens));
}

void run_export(const ExportOptions& options) {
  if (options.format == "imatrix") return run_imatrix_export(options);
  LoadedModel loaded = load_model_with(options.model);
  if (!loaded.int8.empty()) {
    fail("{}: an INT8 package; export its FP32 model (GGUF Q8_0 quantizes it in llama.cpp's own blocks)", loaded.path);
  }
  const TokenizerFile tokenizer = find_tokenizer(loaded, options.model.tokenizer);
  GgufExportOptions gguf;
  gguf.weights = *parse_ggml_type(options.type);
  gguf.name = options.name;
  const GgufExportSummary summary = write_gguf_model(options.output, loaded.model, tokenizer.file, gguf);
  if (options.json) {
    const nlohmann::json out = {{"format", options.format},
                                {"type", ggml_type_name(gguf.weights)},
                                {"output", options.output},
                                {"bytes", summary.bytes},
                                {"matrices", summary.matrices_in_requested_type},
                                {"matrices_f16_fallback", summary.matrices_in_f16},
                                {"tokenizer", tokenizer.name}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::fprintf(stderr, "[export] %s -> %s: GGUF, %d matrices %s%s, tokenizer from %s, %.2f MB\n", loaded.path.c_str(),
               options.output.c_str(), summary.matrices_in_requested_type, ggml_type_name(gguf.weights).c_str(),
               summary.matrices_in_f16 ? fmt::format(" ({} in F16: rows not whole blocks)", summary.matrices_in_f16).c_str() : "",
               tokenizer.name.c_str(), static_cast<double>(summary.bytes) / 1e6);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto options = std::make_shared<ExportOptions>();
  CLI::App* command = app.add_subcommand(
      "export", "Write a model or its calibration in another runtime's format: gguf (llama.cpp / ollama, with the tokenizer), imatrix");
  add_model_options(*command, options->model);
  command
      ->add_option("--format", options->format,
                   "gguf: the model for llama.cpp / ollama; imatrix: llama.cpp's importance matrix (.dat) from --stats")
      ->capture_default_str()
      ->check(CLI::IsMember({"gguf", "imatrix"}));
  command->add_option("--stats", options->stats, "Statistics recorded with importance sums (--format imatrix)")->check(CLI::ExistingFile);
  command->add_option("--type", options->type, "GGUF matrix type: f32, f16, bf16 or q8_0 (norms stay F32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  command->add_option("--name", options->name, "general.name of the GGUF file; the dataset name of an imatrix");
  command->add_option("-o,--output", options->output, "File to write")->required();
  command->add_flag("--json", options->json, "Print what was written as JSON");
  command->callback([options] { run_export(*options); });
}

}  // namespace fedcal::cli
