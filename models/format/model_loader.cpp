#include "models/format/model_loader.h"

#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"
#include "common/mapped_file.h"
#include "models/format/gguf_model.h"
#include "models/format/hf_checkpoint.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/tokenizer/hf_tokenizer.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"

namespace fedcal {
namespace fs = std::filesystem;

const char* format_name(ModelFormat format) {
  switch (format) {
    case ModelFormat::kLlama2cLegacy:
      return "llama2.c (legacy)";
    case ModelFormat::kLlama2cVersion1:
      return "llama2.c (version 1)";
    case ModelFormat::kHuggingFace:
      return "Hugging Face (safetensors)";
    case ModelFormat::kPackage:
      return "fedcal package";
    case ModelFormat::kGguf:
      return "GGUF";
  }
  return "?";
}

LoadedModel load_model(const std::string& path, const SigningKey* public_key) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!is_hf_checkpoint_folder(path)) fail("{}: a folder but not a Hugging Face checkpoint (no config.json)", path);
    return {read_hf_checkpoint(path), ModelFormat::kHuggingFace, path, {}, std::nullopt, std::nullopt};
  }
  MappedFile file(path);
  if (looks_like_model_package(file.bytes())) {
    ModelPackage package = parse_model_package(file.bytes(), path, public_key, &file);
    LoadedModel loaded{std::move(package.model), ModelFormat::kPackage, path, std::move(package.int8), std::nullopt, std::nullopt};
    loaded.package = std::move(package);
    return loaded;
  }
  if (looks_like_gguf(file.bytes())) {
    GgufModel gguf = model_from_gguf(parse_gguf(file.bytes(), path));
    LoadedModel loaded{std::move(gguf.model), ModelFormat::kGguf, path, {}, std::nullopt, std::nullopt};
    loaded.embedded_tokenizer = std::move(gguf.tokenizer);
    return loaded;
  }
  const ModelFormat format =
      looks_like_llama2c_version1(file.bytes()) ? ModelFormat::kLlama2cVersion1 : ModelFormat::kLlama2cLegacy;
  return {parse_llama2c_checkpoint(file.bytes(), path), format, path, {}, std::nullopt, std::nullopt};
}

TokenizerFile find_tokenizer(const LoadedModel& loaded, const std::optional<std::string>& tokenizer_path) {
  auto from_path = [](const fs::path& path) {
    const std::string extension = path.extension().string();
    const std::string kind = extension == ".json" ? "hf-json" : extension == ".model" ? "sentencepiece" : "llama2c";
    return TokenizerFile{{kind, read_text_file(path.string())}, path.string()};
  };
  if (tokenizer_path) return from_path(*tokenizer_path);
  if (loaded.package && !loaded.package->tokenizer.kind.empty()) {
    return {loaded.package->tokenizer, loaded.path + " (packaged " + loaded.package->tokenizer.kind + " tokenizer)"};
  }
  if (loaded.embedded_tokenizer) return {*loaded.embedded_tokenizer, loaded.path + " (its tokenizer.ggml metadata)"};
  if (loaded.format == ModelFormat::kPackage) fail("{}: the package carries no tokenizer; pass --tokenizer", loaded.path);
  if (loaded.format == ModelFormat::kHuggingFace) {
    for (const char* name : {"tokenizer.json", "tokenizer.model"}) {
      const fs::path candidate = fs::path(loaded.path) / name;
      std::error_code ec;
      if (fs::exists(candidate, ec)) return from_path(candidate);
    }
    fail("{}: no tokenizer.json or tokenizer.model in the folder; pass --tokenizer", loaded.path);
  }
  fail("{}: a llama2.c checkpoint carries no tokenizer; pass --tokenizer PATH (its tokenizer.bin)", loaded.path);
}

std::unique_ptr<Tokenizer> load_tokenizer(const LoadedModel& loaded, const std::optional<std::string>& tokenizer_path) {
  const TokenizerFile found = find_tokenizer(loaded, tokenizer_path);
  const PackageTokenizer& file = found.file;
  std::optional<HfConfig> hf_config;
  if (loaded.format == ModelFormat::kHuggingFace) {
    const std::string config_path = (fs::path(loaded.path) / "config.json").string();
    hf_config = parse_hf_config(read_text_file(config_path), config_path);
  }
  std::unique_ptr<Tokenizer> tokenizer;
  if (file.kind == "hf-json") {
    tokenizer = parse_hf_tokenizer(file.data, found.name, hf_config ? hf_config->bos_token_id : std::nullopt,
                                   hf_config ? hf_config->eos_token_id : std::nullopt);
  } else if (file.kind == "sentencepiece") {
    tokenizer = SentencePieceTokenizer::from_serialized(file.data, found.name);
  } else if (file.kind == "llama2c") {
    tokenizer = std::make_unique<Llama2cTokenizer>(
        Llama2cTokenizer::parse(std::as_bytes(std::span(file.data)), loaded.model.config.vocab_size, found.name));
  } else {
    fail("{}: unknown tokenizer kind '{}'", found.name, file.kind);
  }
  if (tokenizer->vocab_size() > loaded.model.config.vocab_size) {
    fail("{}: tokenizer has {} pieces but the model {} only {} embeddings", found.name, tokenizer->vocab_size(), loaded.path,
         loaded.model.config.vocab_size);
  }
  return tokenizer;
}

}  // namespace fedcal
