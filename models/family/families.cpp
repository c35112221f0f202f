#include "models/family/family.h"

#include <fmt/format.h>

#include <algorithm>

#include "common/error.h"

namespace fedcal {

const std::vector<const ModelFamily*>& model_families() {
  static const std::vector<const ModelFamily*> kFamilies = {&llama_family(), &qwen2_family(), &qwen3_family(), &gemma3_family()};
  return kFamilies;
}

std::string model_family_names() {
  std::string names;
  for (const ModelFamily* family : model_families()) names += (names.empty() ? "" : ", ") + std::string(family->name);
  return names;
}

const ModelFamily& family_of(const ModelConfig& config) {
  for (const ModelFamily* family : model_families()) {
    if (family->features == config.features()) return *family;
  }
  fail("no model family has this combination of features ({}; families: {})", config.describe_features(), model_family_names());
}

const ModelFamily* find_family_by_hf_model_type(std::string_view model_type) {
  for (const ModelFamily* family : model_families()) {
    if (model_type == family->hf_model_type) return family;
  }
  return nullptr;
}

const ModelFamily* find_family_by_gguf_architecture(std::string_view architecture) {
  for (const ModelFamily* family : model_families()) {
    if (family->gguf_architecture != nullptr && architecture == family->gguf_architecture) return family;
  }
  return nullptr;
}

bool ModelFamily::reads_hf_key(std::string_view key) const {
  return std::any_of(hf_keys.begin(), hf_keys.end(), [key](const HfConfigKey& entry) { return key == entry.name; });
}

std::string ModelFamily::hf_tensor_name(const LayerTensor& tensor, int layer) const {
  for (const auto& [ours, theirs] : hf_layer_tensors) {
    if (ours == tensor.name) return fmt::format("model.layers.{}.{}", layer, theirs);
  }
  fail("model family {} has no Hugging Face name for layer tensor '{}'", name, tensor.name);
}

}  // namespace fedcal
