// A model family: everything about one architecture that sets it apart, in one file each (llama.cpp,
// qwen2.cpp, qwen3.cpp): its names in Hugging Face configs and checkpoints and in GGUF, and the
// forward-pass features it selects. Readers, writers and `inspect` take family-specific facts only
// from here; the layer tensors a feature brings are in layer_tensors.h.
//
// Adding a family: a file defining `<name>_family()`, its declaration below, one line in families.cpp.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "models/family/layer_tensors.h"
#include "models/format/gguf.h"
#include "models/format/hf_config.h"
#include "models/format/model_config.h"

namespace fedcal {

struct ModelFamily {
  const char* name;                // fedcal's: "qwen3"
  const char* summary;             // for errors and `inspect`: "Llama with a per-head RMSNorm of q and k"
  ModelConfig::Features features;  // what it selects; a config's family follows from its features

  // Hugging Face: config.json's model_type and architectures, and the tensor names under
  // "model.layers.N." by fedcal layer-tensor name (every tensor its features bring).
  const char* hf_model_type;
  const char* hf_architecture;  // "Qwen3ForCausalLM"
  std::vector<std::pair<std::string_view, std::string_view>> hf_layer_tensors;
  // config.json keys this family reads itself, in the catalogue's terms: a key listed here is read (or
  // refused) only by `read_hf_config`, never by the shared checks of a key of the same name.
  std::vector<HfConfigKey> hf_keys;
  // Reads the family's own keys and checks what it must beyond the shared catalogue (nullptr: none),
  // after the shared keys are read into `config`.
  void (*read_hf_config)(const nlohmann::json& json, ModelConfig& config);
  // Writes what the family adds to (or takes from) the shared config.json fields (nullptr: nothing).
  void (*write_hf_config)(const ModelConfig& config, nlohmann::json& json);

  // GGUF: llama.cpp's general.architecture (nullptr: fedcal neither writes nor reads the family as
  // GGUF yet), and whether it rotates q and k half-split (NEOX) rather than interleaved.
  const char* gguf_architecture;
  bool gguf_neox_rotary;
  // The `<arch>.` keys the family writes and reads beyond the shared ones (say "attention.sliding_window"),
  // with the hooks that do: the writer refuses, by name, a config llama.cpp's architecture cannot
  // hold; the reader sets what llama.cpp's architecture fixes. Empty / nullptr: none.
  std::vector<std::string> gguf_keys;
  void (*write_gguf)(const ModelConfig& config, GgufWriter& out, const std::string& arch);
  void (*read_gguf)(const GgufFile& file, const std::string& arch, ModelConfig& config);

  bool reads_hf_key(std::string_view key) const;
  // The Hugging Face name of `tensor` in layer `layer`: "model.layers.3.self_attn.q_proj.weight".
  std::string hf_tensor_name(const LayerTensor& tensor, int layer) const;
};

const ModelFamily& llama_family();
const ModelFamily& qwen2_family();
const ModelFamily& qwen3_family();
const ModelFamily& gemma3_family();

// Every family fedcal computes, in the order `inspect` and errors list them.
const std::vector<const ModelFamily*>& model_families();
// "llama, qwen2, qwen3": for errors that say what is supported.
std::string model_family_names();
// The family whose features `config` has; throws Error if none has them.
const ModelFamily& family_of(const ModelConfig& config);
// By config.json's model_type or GGUF's general.architecture; nullptr if none.
const ModelFamily* find_family_by_hf_model_type(std::string_view model_type);
const ModelFamily* find_family_by_gguf_architecture(std::string_view architecture);

}  // namespace fedcal
