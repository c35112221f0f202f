#include <nlohmann/json.hpp>

#include <cstdio>
#include <filesystem>
#include <memory>

#include "common/sha256.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/format/model_loader.h"
#include "models/format/package_tensor_types.h"

namespace fedcal::cli {
namespace {

struct InspectOptions {
  std::string model;
  std::optional<std::string> public_key;
  bool json = false;
  bool tensors = false;
};

// SHA-256 of a model file, or "name: hash" lines for every file of a model folder.
nlohmann::json file_hashes(const std::string& path) {
  namespace fs = std::filesystem;
  nlohmann::json hashes = nlohmann::json::object();
  if (!fs::is_directory(path)) {
    hashes[fs::path(path).filename().string()] = sha256_file_hex(path);
    return hashes;
  }
  std::vector<fs::path> files;
  for (const auto& entry : fs::directory_iterator(path)) {
    if (entry.is_regular_file()) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const fs::path& file : files) hashes[file.filename().string()] = sha256_file_hex(file.string());
  return hashes;
}

void run_inspect(const InspectOptions& options) {
  LoadedModel loaded = load_model_with({options.model, std::nullopt, options.public_key, 1});
  const ModelConfig& c = loaded.model.config;
  nlohmann::json tensors = nlohmann::json::array();
  auto dtype_of = [&](const std::string& name) -> std::string {
    auto it = loaded.int8.find(name);
    if (it == loaded.int8.end()) return "f32";
    return package_tensor_type_of(it->second.weights).name;
  };
  for (const TensorRef& tensor : list_tensors(loaded.model)) {
    tensors.push_back({{"name", tensor.name},
                       {"shape", tensor.rows == 1 ? nlohmann::json{tensor.cols} : nlohmann::json{tensor.rows, tensor.cols}},
                       {"dtype", dtype_of(tensor.name)}});
  }
  if (c.shared_classifier && loaded.int8.count("classifier")) {
    tensors.push_back({{"name", "classifier"}, {"shape", {c.vocab_size, c.dim}}, {"dtype", dtype_of("classifier")}});
  }
  nlohmann::json package = nullptr;
  if (loaded.package) {
    const PackageProvenance& p = loaded.package->provenance;
    package = {{"content_sha256", loaded.package->content_sha256},
               {"signed", loaded.package->signed_package},
               {"signature_verified", options.public_key.has_value()},
               {"int8_layers", loaded.int8.size()},
               {"method", p.method},
               {"per_channel", p.per_channel},
               {"asymmetric", p.asymmetric},
               {"calibration_sequences", p.sequences},
               {"calibration_tokens", p.tokens},
               {"stats_sha256", p.stats_sha256},
               {"keep_fp32", p.keep_fp32},
               {"source_model_sha256", p.source_model_sha256},
               {"tokenizer", loaded.package->tokenizer.kind}};
  }
  const nlohmann::json hashes = file_hashes(options.model);
  if (options.json) {
    nlohmann::json out = {{"path", options.model},
                          {"format", format_name(loaded.format)},
                          {"dim", c.dim},
                          {"hidden_dim", c.hidden_dim},
                          {"n_layers", c.n_layers},
                          {"n_heads", c.n_heads},
                          {"n_kv_heads", c.n_kv_heads},
                          {"vocab_size", c.vocab_size},
                          {"max_seq_len", c.max_seq_len},
                          {"rope_theta", c.rope_theta},
                          {"norm_eps", c.norm_eps},
                          {"shared_classifier", c.shared_classifier},
                          {"parameters", c.parameter_count()},
                          {"file_bytes", model_file_bytes(options.model)},
                          {"sha256", hashes},
                          {"package", package},
                          {"tensors", tensors}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model:       %s\n", options.model.c_str());
  std::printf("format:      %s\n", format_name(loaded.format));
  std::printf("architecture: %s\n", c.describe().c_str());
  std::printf("parameters:  %lld (%.2f M)\n", static_cast<long long>(c.parameter_count()), c.parameter_count() / 1e6);
  std::printf("file bytes:  %zu\n", model_file_bytes(options.model));
  for (const auto& [file, hash] : hashes.items())
    std::printf("sha256:      %s  %s\n", hash.get<std::string>().c_str(), file.c_str());
  if (loaded.package) {
    for (const auto& [key, value] : package.items()) std::printf("package.%-21s %s\n", key.c_str(), value.dump().c_str());
  }
  std::printf("tensors:     %zu%s\n", tensors.size(), options.tensors ? "" : " (--tensors lists them)");
  if (options.tensors) {
    for (const auto& tensor : tensors)
      std::printf("  %-28s %-14s %s\n", tensor["name"].get<std::string>().c_str(), tensor["shape"].dump().c_str(),
                  tensor["dtype"].get<std::string>().c_str());
  }
}

}  // namespace

void add_inspect_command(CLI::App& app) {
  auto options = std::make_shared<InspectOptions>();
  CLI::App* command = app.add_subcommand("inspect", "Architecture, parameter count, tensor list and file hash of a model");
  command->add_option("-m,--model", options->model, "Model: llama2.c .bin file, Hugging Face folder or fedcal package")
      ->required();
  command->add_option("--public-key", options->public_key, "Verify a package's signature with this Ed25519 public key (PEM)");
  command->add_flag("--tensors", options->tensors, "List every tensor");
  command->add_flag("--json", options->json, "Print one JSON object (always with the tensor list)");
  command->callback([options] { run_inspect(*options); });
}

}  // namespace fedcal::cli
