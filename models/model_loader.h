// Opens a model from any supported format, and the tokenizer that goes with it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "models/model.h"
#include "models/tokenizer.h"

namespace fedcal {

enum class ModelFormat { kLlama2cLegacy, kLlama2cVersion1, kHuggingFace };
const char* format_name(ModelFormat format);

struct LoadedModel {
  Model model;
  ModelFormat format;
  std::string path;
};

// A folder with config.json is a Hugging Face checkpoint; a file is a llama2.c checkpoint (version 1
// by its magic, else legacy). Errors name the path.
LoadedModel load_model(const std::string& path);

// The tokenizer for a model: `tokenizer_path` if given (a llama2.c tokenizer.bin, a sentencepiece
// .model or a tokenizer.json, by extension), else the folder's tokenizer.json / tokenizer.model for a
// Hugging Face checkpoint. A llama2.c checkpoint without --tokenizer is an error that says so.
std::unique_ptr<Tokenizer> load_tokenizer(const LoadedModel& model, const std::optional<std::string>& tokenizer_path);

}  // namespace fedcal
