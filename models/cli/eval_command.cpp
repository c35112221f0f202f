#include <nlohmann/json.hpp>

#include <chrono>
#include <cstdio>
#include <memory>

#include "common/error.h"
#include "common/file_util.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/cli/progress.h"
#include "models/engine/evaluation.h"
#include "models/format/model_loader.h"

namespace fedcal::cli {
namespace {

struct EvalCommandOptions {
  ModelOptions model;
  QuantizationOptions quantization;
  std::string text;
  std::optional<std::string> reference;
  std::optional<std::string> reference_tokenizer;
  int context = 0;
  int stride = 0;
  bool json = false;
};

void run_eval(const EvalCommandOptions& options) {
  const std::string text = read_utf8_text_file(options.text);
  LoadedModel loaded = load_model_with(options.model);
  std::unique_ptr<Tokenizer> tokenizer = load_tokenizer(loaded, options.model.tokenizer);
  XnnRuntime runtime(resolve_threads(options.model.threads, loaded.model.config.parameter_count()));
  std::unique_ptr<Transformer> model = make_transformer(std::move(loaded), runtime, options.quantization, tokenizer.get());

  std::unique_ptr<Transformer> reference;
  if (options.reference) {
    // A reference package is held to the same --public-key as the model.
    ModelOptions reference_options = options.model;
    reference_options.model = *options.reference;
    LoadedModel reference_loaded = load_model_with(reference_options);
    // The reference must tokenize identically; its own tokenizer is checked against the model's.
    if (reference_loaded.format == ModelFormat::kHuggingFace || reference_loaded.format == ModelFormat::kPackage ||
        reference_loaded.format == ModelFormat::kGguf ||
        options.reference_tokenizer) {
      auto reference_tokenizer = load_tokenizer(reference_loaded, options.reference_tokenizer);
      const std::string probe = text.substr(0, 4096);
      if (reference_tokenizer->encode(probe, true) != tokenizer->encode(probe, true)) {
        fail("{}: the reference model tokenizes the text differently from {}; KL needs one shared tokenizer", *options.reference,
             options.model.model);
      }
    }
    reference = make_transformer(std::move(reference_loaded), runtime, QuantizationOptions{});
  }

  const std::vector<int> tokens = tokenizer->encode(text, /*add_bos=*/true);
  EvalOptions eval_options;
  eval_options.context = options.context;
  eval_options.stride = options.stride;
  const auto start = std::chrono::steady_clock::now();
  // Progress goes to stderr in --json mode too: stdout carries only the JSON.
  Progress progress("[eval]", false);
  eval_options.progress = [&](int64_t done, int64_t total) {
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    progress.update(fmt::format("{} / {} tokens scored ({:.0f} tokens/s)", done, total, seconds > 0 ? done / seconds : 0.0),
                    done == total);
  };
  const EvalResult result = evaluate(*model, reference.get(), tokens, text.size(), eval_options);

  if (options.json) {
    nlohmann::json out = {{"model", options.model.model},
                          {"text", options.text},
                          {"tokens", result.tokens},
                          {"bytes", text.size()},
                          {"mean_nll", result.mean_nll},
                          {"perplexity", result.perplexity},
                          {"bits_per_byte", result.bits_per_byte}};
    if (result.reference) {
      out["reference"] = *options.reference;
      out["reference_perplexity"] = result.reference->reference_perplexity;
      out["mean_kl"] = result.reference->mean_kl;
      out["max_kl"] = result.reference->max_kl;
      out["top1_agreement"] = result.reference->top1_agreement;
    }
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("tokens scored:  %lld (%zu bytes)\n", static_cast<long long>(result.tokens), text.size());
  std::printf("perplexity:     %.4f\n", result.perplexity);
  std::printf("bits per byte:  %.4f\n", result.bits_per_byte);
  if (result.reference) {
    std::printf("reference perplexity: %.4f\n", result.reference->reference_perplexity);
    std::printf("KL vs reference:      mean %.6f, max %.6f nats\n", result.reference->mean_kl, result.reference->max_kl);
    std::printf("top-1 agreement:      %.4f\n", result.reference->top1_agreement);
  }
}

}  // namespace

void add_eval_command(CLI::App& app) {
  auto options = std::make_shared<EvalCommandOptions>();
  CLI::App* command = app.add_subcommand(
      "eval",
      "Perplexity and bits per byte on a text file; with --reference, KL divergence and top-1 agreement vs another model");
  add_model_options(*command, options->model);
  add_quantization_options(*command, options->quantization);
  command->add_option("--text", options->text, "UTF-8 text file to score")->required()->check(CLI::ExistingFile);
  command->add_option("--reference", options->reference,
                      "Reference model (same vocabulary) to compare next-token distributions with");
  command->add_option("--reference-tokenizer", options->reference_tokenizer,
                      "Tokenizer of the reference model, checked to tokenize like the model's");
  command->add_option("--context", options->context, "Window length in tokens (default: the model's context length)")
      ->check(CLI::Range(2, 1 << 20));
  command->add_option("--stride", options->stride, "Tokens each window advances (default: half the window)")
      ->check(CLI::Range(1, 1 << 20));
  command->add_flag("--json", options->json, "Print one JSON object");
  command->callback([options] { run_eval(*options); });
}

}  // namespace fedcal::cli
