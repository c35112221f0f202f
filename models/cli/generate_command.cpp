#include <chrono>
#include <cstdio>
#include <memory>

#include "common/error.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/engine/generation.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"

namespace fedcal::cli {
namespace {

struct GenerateOptions {
  ModelOptions model;
  QuantizationOptions quantization;
  std::string prompt;
  int max_tokens = 256;
  float temperature = 0.8f;
  float top_p = 0.9f;
  uint64_t seed = 42;
  bool quiet = false;
};

void run_generate(const GenerateOptions& options) {
  LoadedModel loaded = load_model_with(options.model);
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(loaded, options.model.tokenizer);
  XnnRuntime runtime(resolve_threads(options.model.threads, loaded.model.config.parameter_count()));
  std::unique_ptr<Transformer> model = make_transformer(std::move(loaded), runtime, options.quantization, tokenizer.get());
  Transformer& transformer = *model;

  const std::vector<int> prompt = tokenizer->encode(options.prompt, /*add_bos=*/true);
  GenerationOptions generation_options;
  generation_options.max_tokens = options.max_tokens;
  generation_options.sampler = {options.temperature, options.top_p, options.seed};
  std::fputs(options.prompt.c_str(), stdout);
  std::fflush(stdout);
  const Generation generation = generate(transformer, *tokenizer, prompt, generation_options, [&](int previous, int token) {
    std::fputs(tokenizer->decode(previous, token).c_str(), stdout);
    std::fflush(stdout);
  });
  std::fputs("\n", stdout);
  const double prefill_seconds = generation.prefill_seconds, decode_seconds = generation.decode_seconds;
  const auto generated = static_cast<int>(generation.tokens.size());
  const char* stop_reason = stop_reason_name(generation.stop);
  if (!options.quiet) {
    std::fprintf(stderr, "[prompt: %d tokens at %.0f tokens/s; generated: %d tokens at %.1f tokens/s; stopped at %s]\n",
                 static_cast<int>(prompt.size()), prefill_seconds > 0 ? prompt.size() / prefill_seconds : 0.0, generated,
                 decode_seconds > 0 ? generated / decode_seconds : 0.0, stop_reason);
  }
}

}  // namespace

void add_generate_command(CLI::App& app) {
  auto options = std::make_shared<GenerateOptions>();
  CLI::App* command = app.add_subcommand("generate", "Print the prompt and the model's continuation of it");
  add_model_options(*command, options->model);
  add_quantization_options(*command, options->quantization);
  command->add_option("-p,--prompt", options->prompt, "Text to continue")->required();
  command
      ->add_option("-n,--max-tokens", options->max_tokens,
                   "Tokens to generate at most (also stops at end of sequence and at the context length)")
      ->capture_default_str()
      ->check(CLI::Range(0, 1 << 24));
  command->add_option("--temperature", options->temperature, "Sampling temperature; 0 is greedy argmax")
      ->capture_default_str()
      ->check(CLI::Range(0.0f, 100.0f));
  command->add_option("--top-p", options->top_p, "Nucleus sampling threshold in (0, 1]")
      ->capture_default_str()
      ->check(CLI::Range(1e-6f, 1.0f));
  command->add_option("--seed", options->seed, "Random seed of the sampler")->capture_default_str();
  command->add_flag("-q,--quiet", options->quiet, "Do not print timing to stderr");
  command->callback([options] { run_generate(*options); });
}

}  // namespace fedcal::cli
