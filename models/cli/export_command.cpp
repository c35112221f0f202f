#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/format/gguf_model.h"

namespace fedcal::cli {
namespace {

struct ExportOptions {
  ModelOptions model;
  std::string format = "gguf";
  std::string type = "f32";
  std::string name;
  std::string output;
  bool json = false;
};

void run_export(const ExportOptions& options) {
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
      "export", "Write a model in another runtime's format: gguf (llama.cpp / ollama), with its tokenizer");
  add_model_options(*command, options->model);
  command->add_option("--format", options->format, "Target format: gguf")->capture_default_str()->check(CLI::IsMember({"gguf"}));
  command->add_option("--type", options->type, "GGUF matrix type: f32, f16, bf16 or q8_0 (norms stay F32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  command->add_option("--name", options->name, "general.name of the GGUF file");
  command->add_option("-o,--output", options->output, "File to write")->required();
  command->add_flag("--json", options->json, "Print what was written as JSON");
  command->callback([options] { run_export(*options); });
}

}  // namespace fedcal::cli
