#include <fmt/format.h>
#include <fmt/ranges.h>

#include <cstdio>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>

#include "common/error.h"
#include "common/file_util.h"
#include "common/signing.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/format/model_package.h"
#include "models/quant/calibration.h"
#include "models/quant/recipe.h"

namespace fedcal::cli {
namespace {
namespace fs = std::filesystem;

struct QuantizeCommandOptions {
  ModelOptions model;
  QuantizationOptions quantization;
  std::string runtime = "engine", recipe = "recommended";
  std::optional<std::string> sign;
  std::string output;
};

// With --stats, every recipe option not given (`given` says which were) takes the recipe's value for
// the runtime; prints what it chose. Smoothing needs a second calibration, so quantize cannot apply
// it: it says how.
void apply_recipe(QuantizeCommandOptions& options, const std::function<bool(const char*)>& given) {
  const TargetRuntime runtime = parse_target_runtime(options.runtime);
  QuantizationOptions& q = options.quantization;
  if (!runs_fine_grained(runtime) && (q.weight_groups || !q.fine_grained.empty() || q.fallback != LayerFallback::kFp32 ||
                                      q.weight_bits != 8 || !q.four_bit.empty() || !q.five_bit.empty()))
    fail(
        "--runtime {} runs static INT8 scales only: the fine-grained mode (--weight-groups, --fine-grained, --fallback "
        "fine-grained) and 4- or 5-bit weights (--weight-bits, --four-bit, --five-bit) need fedcal's engine",
        options.runtime);
  const Recipe recipe = named_recipe(options.recipe, runtime);
  if (options.recipe != "recommended" || !q.stats || q.weight_groups || q.weight_bits != 8) return;
  std::vector<std::string> chosen;
  if (!given("--method")) {
    q.method = recipe.method;
    chosen.push_back("--method " + recipe.method);
  }
  if (!given("--per-channel")) {
    q.per_channel = recipe.per_channel;
    chosen.emplace_back(recipe.per_channel ? "--per-channel" : "--per-tensor");
  }
  if (!given("--target-kl") && !given("--auto-fp32") && !recipe.target_kl.empty()) {
    q.target_kl = recipe.target_kl;
    chosen.push_back("--target-kl " + recipe.target_kl);
  }
  if (!given("--fallback")) {
    q.fallback = parse_fallback(recipe.fallback);
    chosen.push_back("--fallback " + recipe.fallback);
  }
  std::fprintf(stderr, "[recipe] recommended for --runtime %s: %s; chosen: %s (--recipe plain for the plain defaults)\n",
               options.runtime.c_str(), recipe.summary.c_str(),
               chosen.empty() ? "nothing (every option given)" : fmt::format("{}", fmt::join(chosen, " ")).c_str());
  if (recipe.smooth)
    std::fprintf(stderr,
                 "[recipe] not smoothed: smoothing needs importance sums and a second calibration (`fedcal-model smooth`, "
                 "then calibrate and quantize the smoothed model; a round with --smooth does both)\n");
}

void run_quantize(const QuantizeCommandOptions& options) {
  LoadedModel loaded = load_model_with(options.model);
  if (!loaded.int8.empty()) fail("{}: already an INT8 package", loaded.path);
  if (is_dynamic(options.quantization.activations))
    fail("a package holds static activation scales; --activations dynamic is chosen where a model runs (eval, bench, generate)");
  const PackageTokenizer tokenizer = find_tokenizer(loaded, options.model.tokenizer).file;
  std::optional<SigningKey> key;
  if (options.sign) key = SigningKey::read_private_key(*options.sign);

  PackageProvenance provenance;
  QuantizedLinears int8;
  if (options.quantization.weight_groups) {
    // The fine-grained package: weights in groups of 32, no activation scales (they are computed per
    // block at run time, wherever the package runs).
    if (options.quantization.stats) fail("--weight-groups takes no --stats: its activations are quantized at run time");
    int8 = quantize_model_weights(loaded.model, weight_options(options.quantization));
    provenance.method = "weight groups of 32, activations per block at run time";
    provenance.source_model_sha256 = model_fingerprint(loaded.model);
  } else if (options.quantization.weight_bits != 8 && !options.quantization.stats) {
    // Every linear in 4 (5) bits, rounded plainly (activations per block at run time: no statistics).
    QuantizeOptions quantize = weight_options(options.quantization);
    prepare_four_bit(quantize, nullptr, "", loaded.model.config);
    int8 = quantize_model_weights(loaded.model, quantize);
    provenance.method = four_bit_method(quantize);
    provenance.source_model_sha256 = model_fingerprint(loaded.model);
  } else if (!options.quantization.stats) {
    provenance.source_model_sha256 = model_fingerprint(loaded.model);
  } else {
    int8 = quantize_with(loaded, options.quantization, options.model, provenance);
  }
  PackageWriteOptions write_options;
  if (key) write_options.signing_key = &*key;
  write_model_package(options.output, loaded.model, int8, tokenizer, provenance, write_options);
  std::fprintf(stderr, "[quantize] %s: %zu INT8 layers, %s, %s -> %s (%.2f MB)\n", loaded.path.c_str(), int8.size(),
               int8.empty() ? "FP32 package" : provenance.method.c_str(), key ? "signed" : "unsigned", options.output.c_str(),
               fs::file_size(options.output) / 1e6);
}

struct KeygenOptions {
  std::string output;
  bool force = false;
};

void run_keygen(const KeygenOptions& options) {
  for (const std::string& path : {options.output, options.output + ".pub"}) {
    if (!options.force && fs::exists(path)) {
      fail("{} exists: keygen does not replace a key (packages signed with it would no longer verify); --force to replace it",
           path);
    }
  }
  const SigningKey key = SigningKey::generate();
  key.write_private_key(options.output);
  key.write_public_key(options.output + ".pub");
  std::printf("wrote %s (private, mode 0600) and %s.pub; public key %s\n", options.output.c_str(), options.output.c_str(),
              key.public_key_hex().c_str());
}

}  // namespace

void add_package_commands(CLI::App& app) {
  auto options = std::make_shared<QuantizeCommandOptions>();
  CLI::App* command = app.add_subcommand(
      "quantize",
      "Write a fedcal package: static INT8 (W8A8) with scales from --stats, the fine-grained INT8 mode with "
      "--weight-groups, or FP32 without either; optionally signed");
  add_model_options(*command, options->model);
  add_quantization_options(*command, options->quantization);
  command
      ->add_option("--runtime", options->runtime,
                   "What the package will run on: engine (fedcal's), or a static-scale runtime: onnx, openvino, tensorrt, "
                   "xnnpack. With --stats, picks the recipe's defaults")
      ->capture_default_str()
      ->check(CLI::IsMember(target_runtime_names()));
  command
      ->add_option("--recipe", options->recipe,
                   "recommended: with --stats, every recipe option not given (--method, --per-channel/--per-tensor, "
                   "--target-kl, --fallback) is the one measured best for --runtime (docs/QUANTIZATION.md); plain: static "
                   "per-tensor percentile:99.99, no target")
      ->capture_default_str()
      ->check(CLI::IsMember({"recommended", "plain"}));
  command->add_option("--sign", options->sign, "Ed25519 private key (PEM, from keygen) to sign the package with");
  command->add_option("-o,--output", options->output, "Package file to write")->required();
  command->callback([options, command] {
    apply_recipe(*options, [command](const char* name) { return command->get_option(name)->count() > 0; });
    run_quantize(*options);
  });

  auto keygen = std::make_shared<KeygenOptions>();
  CLI::App* keygen_command = app.add_subcommand("keygen", "Create an Ed25519 signing key pair: KEY (private) and KEY.pub");
  keygen_command->add_option("-o,--output", keygen->output, "Private key file; the public key goes to FILE.pub")->required();
  keygen_command->add_flag("--force", keygen->force, "Replace an existing key pair");
  keygen_command->callback([keygen] { run_keygen(*keygen); });
}

}  // namespace fedcal::cli
