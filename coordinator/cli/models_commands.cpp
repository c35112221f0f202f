// fedcal-coordinator models import | list
#include <fmt/format.h>

#include <filesystem>
#include <memory>

#include "coordinator/cli/commands.h"
#include "coordinator/cli/report_format.h"

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
  models->add_subcommand("list", "Imported models and round results")->callback([&context] {
    const auto reply = context.call({{"command", "models.list"}});
    context.print(reply, format_models(reply));
  });
}

}  // namespace fedcal::coordinator
