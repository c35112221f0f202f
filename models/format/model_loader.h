// Opens a model from any supported format, and the tokenizer that goes with it.
#pragma once

#include <memory>
#include <optional>
#include <string>

#include "common/signing.h"
#include "models/format/model.h"
#include "models/format/model_package.h"
#include "models/quant/linear_int8.h"
#include "models/tokenizer/tokenizer.h"

namespace fedcal {

enum class ModelFormat { kLlama2cLegacy, kLlama2cVersion1, kHuggingFace, kPackage, kGguf };
const char* format_name(ModelFormat format);

struct LoadedModel {
  Model model;
  ModelFormat format;
  std::string path;
  QuantizedLinears int8;                // a package's INT8 layers (empty: FP32)
  std::optional<ModelPackage> package;  // a package's tokenizer, provenance and hash (model and int8 moved out)
  std::optional<PackageTokenizer> embedded_tokenizer;  // the tokenizer a GGUF file carries
};

// A folder with config.json is a Hugging Face checkpoint; a file is a fedcal package (by its magic),
// a GGUF file (by its magic; dequantized to FP32), a llama2.c version-1 checkpoint (by its magic), else a legacy llama2.c checkpoint. A package is
// verified against `public_key` when one is given. Errors name the path.
LoadedModel load_model(const std::string& path, const SigningKey* public_key = nullptr);

// The tokenizer file that goes with a model, whole: `tokenizer_path` if given (its kind by extension:
// .json tokenizer.json, .model sentencepiece, else llama2.c tokenizer.bin), else the one inside a
// package or GGUF file, else the Hugging Face folder's tokenizer.json / tokenizer.model. `name` says where it came from.
struct TokenizerFile {
  PackageTokenizer file;
  std::string name;
};
TokenizerFile find_tokenizer(const LoadedModel& model, const std::optional<std::string>& tokenizer_path);

// The tokenizer for a model: `tokenizer_path` if given (a llama2.c tokenizer.bin, a sentencepiece
// .model or a tokenizer.json, by extension), else the folder's tokenizer.json / tokenizer.model for a
// Hugging Face checkpoint, or the one inside a package. A llama2.c checkpoint without --tokenizer is
// an error that says so.
std::unique_ptr<Tokenizer> load_tokenizer(const LoadedModel& model, const std::optional<std::string>& tokenizer_path);

}  // namespace fedcal
