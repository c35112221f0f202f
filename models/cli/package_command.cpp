#include <cstdio>
#include <filesystem>
#include <memory>
#include <set>

#include "common/error.h"
#include "common/file_util.h"
#include "common/signing.h"
#include "models/calibration.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/model_package.h"
#include "models/quantize.h"

namespace fedcal::cli {
namespace {
namespace fs = std::filesystem;

// The tokenizer to embed: --tokenizer, else the Hugging Face folder's, else a package's.
PackageTokenizer tokenizer_to_package(const LoadedModel& loaded, const std::optional<std::string>& tokenizer_path) {
  auto from_file = [](const fs::path& path) {
    const std::string extension = path.extension().string();
    const std::string kind = extension == ".json" ? "hf-json" : extension == ".model" ? "sentencepiece" : "llama2c";
    return PackageTokenizer{kind, read_text_file(path.string())};
  };
  if (tokenizer_path) return from_file(*tokenizer_path);
  if (loaded.package) return loaded.package->tokenizer;
  if (loaded.format == ModelFormat::kHuggingFace) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const fs::path candidate = fs::path(loaded.path) / name;
      if (fs::exists(candidate)) return from_file(candidate);
    }
  }
  fail("{}: no tokenizer to package; pass --tokenizer", loaded.path);
}

struct QuantizeCommandOptions {
  ModelOptions model;
  QuantizationOptions quantization;
  std::optional<std::string> sign;
  std::string output;
};

void run_quantize(const QuantizeCommandOptions& options) {
  LoadedModel loaded = load_model_with(options.model);
  if (!loaded.int8.empty()) fail("{}: already an INT8 package", loaded.path);
  const PackageTokenizer tokenizer = tokenizer_to_package(loaded, options.model.tokenizer);
  std::optional<SigningKey> key;
  if (options.sign) key = SigningKey::read_private_key(*options.sign);

  PackageProvenance provenance;
  provenance.source_model_sha256 = model_fingerprint(loaded.model);
  QuantizedLinears int8;
  if (options.quantization.stats) {
    const CalibrationStats stats = read_stats(*options.quantization.stats);
    if (stats.model_sha256 != provenance.source_model_sha256) {
      fail("{}: statistics were recorded on another model than {}", *options.quantization.stats, loaded.path);
    }
    QuantizeOptions quantize;
    quantize.method = ScaleMethodSpec::parse(options.quantization.method);
    quantize.per_channel = options.quantization.per_channel;
    quantize.asymmetric = options.quantization.asymmetric;
    quantize.keep_fp32 = std::set<std::string>(options.quantization.keep_fp32.begin(), options.quantization.keep_fp32.end());
    int8 = with_context([&] { return *options.quantization.stats; }, [&] { return quantize_model(loaded.model, stats, quantize); });
    provenance.method = quantize.method.to_string();
    provenance.per_channel = quantize.per_channel;
    provenance.asymmetric = quantize.asymmetric;
    provenance.sequences = stats.sequences;
    provenance.tokens = stats.tokens;
    provenance.stats_sha256 = stats.sha256();
    provenance.keep_fp32 = options.quantization.keep_fp32;
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
};

void run_keygen(const KeygenOptions& options) {
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
      "quantize", "Write a fedcal package: static INT8 (W8A8) with scales from --stats, or FP32 without --stats; optionally signed");
  add_model_options(*command, options->model);
  add_quantization_options(*command, options->quantization);
  command->add_option("--sign", options->sign, "Ed25519 private key (PEM, from keygen) to sign the package with");
  command->add_option("-o,--output", options->output, "Package file to write")->required();
  command->callback([options] { run_quantize(*options); });

  auto keygen = std::make_shared<KeygenOptions>();
  CLI::App* keygen_command = app.add_subcommand("keygen", "Create an Ed25519 signing key pair: KEY (private) and KEY.pub");
  keygen_command->add_option("-o,--output", keygen->output, "Private key file; the public key goes to FILE.pub")->required();
  keygen_command->callback([keygen] { run_keygen(*keygen); });
}

}  // namespace fedcal::cli
