// fedcal-coordinator models import | list | export
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "coordinator/cli/commands.h"
#include "coordinator/cli/report_format.h"
#include "models/format/runtime_export.h"

namespace fedcal::coordinator {

void add_models_commands(CLI::App& app, const CliContext& context) {
  CLI::App* models = app.add_subcommand("models", "Models and artifacts")->require_subcommand(1);
  struct ImportOptions {
    std::string path, tokenizer, description;
  };
  auto options = std::make_shared<ImportOptions>();
  CLI::App* import_command = models->add_subcommand(
      "import", "Import an FP32 model (llama2.c, Hugging Face folder or fedcal package) as a signed package");
  import_command->add_option("path", options->path, "Model file or folder")->required()->check(CLI::ExistingPath);
  import_command->add_option("--tokenizer", options->tokenizer, "Tokenizer file (needed for llama2.c checkpoints)");
  import_command->add_option("--description", options->description, "Free text shown in `models list`");
  import_command->callback([&context, options] {
    const auto reply =
        context.call({{"command", "models.import"},
                      {"path", std::filesystem::absolute(options->path).string()},
                      {"tokenizer", options->tokenizer.empty() ? "" : std::filesystem::absolute(options->tokenizer).string()},
                      {"description", options->description}});
    context.print(reply, fmt::format("model {}: {} ({:.2f} MB, sha256 {})\n", reply["id"].get<int64_t>(),
                                     reply["description"].get<std::string>(), reply["bytes"].get<double>() / 1e6,
                                     reply["sha256"].get<std::string>()));
  });
  models->add_subcommand("list", "Imported models and round results, with the exports rounds made")->callback([&context] {
    const auto reply = context.call({{"command", "models.list"}});
    context.print(reply, format_models(reply));
  });
  struct ExportOptions {
    int64_t id = 0;
    std::string format, output;
  };
  auto export_options = std::make_shared<ExportOptions>();
  CLI::App* export_command = models->add_subcommand(
      "export",
      "Write a model in another runtime's format (docs/EXPORTS.md): gguf (llama.cpp, Q8_0), imatrix and imatrix-gguf (the round's importance "
      "matrix), onnx (FP32), onnx-qdq (a round's INT8 package as ONNX QDQ), tensorrt-cache (its scales for trtexec --calib)");
  export_command->add_option("id", export_options->id, "Model id (see `models list`)")->required()->check(CLI::PositiveNumber);
  export_command->add_option("--format", export_options->format, "gguf, imatrix, imatrix-gguf, onnx, onnx-qdq or tensorrt-cache")
      ->required()
      ->check(CLI::IsMember(kRuntimeExportFormats));
  export_command->add_option("-o,--output", export_options->output, "File to write (on the coordinator's machine)")->required();
  export_command->callback([&context, export_options] {
    const auto reply = context.call({{"command", "models.export"},
                                     {"id", export_options->id},
                                     {"format", export_options->format},
                                     {"output", std::filesystem::absolute(export_options->output).string()}});
    context.print(reply, fmt::format("model {} -> {}: {} ({:.2f} MB)\n", reply["model"].get<int64_t>(), reply["output"].get<std::string>(),
                                     reply["summary"].get<std::string>(), reply["bytes"].get<double>() / 1e6));
  });
}

}  // namespace fedcal::coordinator
