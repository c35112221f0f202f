#include "models/format/hf_config.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "models/family/family.h"

namespace fedcal {
namespace {

const std::vector<HfConfigKey> kKeys = {
    // The architecture.
    {"model_type", HfKeyUse::kUsed, "the family (one of models/family/'s); others are refused until implemented"},
    {"architectures", HfKeyUse::kChecked, "the family's causal LM (e.g. LlamaForCausalLM), nothing else"},
    {"hidden_size", HfKeyUse::kUsed, "the residual width"},
    {"intermediate_size", HfKeyUse::kUsed, "the SwiGLU width"},
    {"num_hidden_layers", HfKeyUse::kUsed, "layers"},
    {"num_attention_heads", HfKeyUse::kUsed, "query heads"},
    {"num_key_value_heads", HfKeyUse::kUsed, "key/value heads (default: num_attention_heads)"},
    {"head_dim", HfKeyUse::kUsed, "the width of each head (default hidden_size / num_attention_heads)"},
    {"vocab_size", HfKeyUse::kUsed, "the vocabulary"},
    {"max_position_embeddings", HfKeyUse::kUsed, "the context length"},
    {"rms_norm_eps", HfKeyUse::kUsed, "the RMSNorm epsilon (default 1e-6)"},
    {"tie_word_embeddings", HfKeyUse::kUsed, "the classifier is the token table (default false)"},
    {"hidden_act", HfKeyUse::kChecked, "\"silu\""},
    {"attention_bias", HfKeyUse::kChecked,
     "false: no q/k/v/o biases (Llama, Qwen3); Qwen2's q/k/v biases come with its model_type"},
    {"mlp_bias", HfKeyUse::kChecked, "false: no MLP biases"},
    // Positions.
    {"rope_theta", HfKeyUse::kUsed, "the RoPE base (transformers 4; default 10000)"},
    {"rope_scaling", HfKeyUse::kUsed, "null, the default RoPE type, or Llama 3's scaling (transformers 4)"},
    {"rope_parameters", HfKeyUse::kUsed, "rope_theta, and the default RoPE type or Llama 3's scaling (transformers 5)"},
    {"rope_interleaved", HfKeyUse::kChecked, "false: the Hugging Face rotary layout"},
    {"partial_rotary_factor", HfKeyUse::kChecked, "1: rotary on the whole head"},
    // Attention span.
    {"use_sliding_window", HfKeyUse::kChecked, "false: full attention"},
    {"sliding_window", HfKeyUse::kNoEffect, "not read while use_sliding_window is false; refused without that"},
    {"max_window_layers", HfKeyUse::kNoEffect, "only read with a sliding window, which is refused"},
    {"layer_types", HfKeyUse::kChecked, "every layer \"full_attention\""},
    // Tokens.
    {"bos_token_id", HfKeyUse::kUsed, "the beginning-of-sequence token"},
    {"eos_token_id", HfKeyUse::kUsed, "the end-of-sequence token (one id)"},
    {"pad_token_id", HfKeyUse::kNoEffect, "padding of batches of unequal length; fedcal never pads"},
    // Neither the forward pass nor the weights.
    {"torch_dtype", HfKeyUse::kNoEffect, "the stored precision; fedcal reads each tensor's dtype from its safetensors header"},
    {"dtype", HfKeyUse::kNoEffect, "transformers 5's name for torch_dtype"},
    {"transformers_version", HfKeyUse::kNoEffect, "bookkeeping"},
    {"_name_or_path", HfKeyUse::kNoEffect, "bookkeeping"},
    {"initializer_range", HfKeyUse::kNoEffect, "initialization for training"},
    {"attention_dropout", HfKeyUse::kNoEffect, "dropout is off at inference"},
    {"use_cache", HfKeyUse::kNoEffect, "whether transformers keeps a KV cache; the math is the same"},
    {"pretraining_tp", HfKeyUse::kNoEffect, "splits the same products into slices and sums them: the same function"},
    {"is_llama_config", HfKeyUse::kNoEffect, "a marker SmolLM writes"},
};

int required_int(const nlohmann::json& json, const char* field) {
  auto it = json.find(field);
  if (it == json.end()) fail("missing field '{}'", field);
  if (!it->is_number_integer()) fail("field '{}' is not an integer", field);
  int64_t value = it->get<int64_t>();
  if (value < 1 || value > INT32_MAX) fail("field '{}' = {} is out of range", field, value);
  return static_cast<int>(value);
}

std::optional<int> optional_token_id(const nlohmann::json& json, const char* field) {
  auto it = json.find(field);
  if (it == json.end() || it->is_null()) return std::nullopt;
  if (it->is_array()) refuse_hf_key(field, *it, "one token id is supported, not a list");
  if (!it->is_number_integer() || it->get<int64_t>() < 0 || it->get<int64_t>() > INT32_MAX) {
    fail("field '{}' is not a token id", field);
  }
  return static_cast<int>(it->get<int64_t>());
}

template <typename T>
T optional_value(const nlohmann::json& json, const char* field, T fallback) {
  auto it = json.find(field);
  if (it == json.end() || it->is_null()) return fallback;
  if constexpr (std::is_same_v<T, bool>) {
    if (!it->is_boolean()) fail("field '{}' is not a boolean", field);
  } else {
    if (!it->is_number()) fail("field '{}' is not a number", field);
  }
  return it->get<T>();
}

// Refuses `key` unless it is absent, null or equal to `expected`.
void require_value(const nlohmann::json& json, const char* key, const nlohmann::json& expected, const std::string& why) {
  const auto it = json.find(key);
  if (it != json.end() && !it->is_null() && *it != expected) refuse_hf_key(key, *it, why);
}

// A number field of a RoPE parameter object, refused by name if missing or not a number.
double rope_number(const nlohmann::json& parameters, const char* key, const char* field) {
  const auto it = parameters.find(field);
  if (it == parameters.end() || !it->is_number()) refuse_hf_key(key, parameters, fmt::format("'{}' must be a number", field));
  return it->get<double>();
}

// RoPE from rope_theta (4.x) and rope_scaling / rope_parameters (5.x; either may hold the type): the
// default type, or Llama 3's scaling, with no parameter left unread.
void read_rope(const nlohmann::json& json, ModelConfig& config) {
  std::optional<double> theta;
  if (json.contains("rope_theta") && !json["rope_theta"].is_null()) theta = optional_value(json, "rope_theta", 10000.0);
  for (const char* key : {"rope_scaling", "rope_parameters"}) {
    const auto it = json.find(key);
    if (it == json.end() || it->is_null()) continue;
    if (!it->is_object()) refuse_hf_key(key, *it, "expected an object");
    const nlohmann::json type = it->contains("rope_type") ? (*it)["rope_type"] : it->value("type", nlohmann::json("default"));
    if (type != "default" && type != "llama3")
      refuse_hf_key(key, *it, fmt::format("RoPE type {} is not supported yet (the default and \"llama3\" are)", type.dump()));
    for (const auto& [name, value] : it->items()) {
      if (name == "rope_type" || name == "type") continue;
      if (name == "rope_theta") {
        if (!value.is_number()) refuse_hf_key(key, *it, "rope_theta is not a number");
        if (theta && *theta != value.get<double>())
          refuse_hf_key(key, *it, fmt::format("rope_theta differs from the top-level {}", *theta));
        theta = value.get<double>();
      } else if (name == "partial_rotary_factor") {
        if (!value.is_number() || value.get<double>() != 1.0)
          refuse_hf_key(key, *it, "partial rotary embeddings are not supported");
      } else if (type == "llama3" && (name == "factor" || name == "low_freq_factor" || name == "high_freq_factor" ||
                                      name == "original_max_position_embeddings")) {
        continue;  // read below
      } else {
        refuse_hf_key(key, *it, fmt::format("'{}' is not a parameter of RoPE type {}", name, type.dump()));
      }
    }
    if (type == "llama3") {
      const double original = rope_number(*it, key, "original_max_position_embeddings");
      if (!(original >= 1 && original <= INT32_MAX) || original != std::floor(original))
        refuse_hf_key(key, *it, "original_max_position_embeddings must be a positive integer");
      config.rope_scaling = {static_cast<float>(rope_number(*it, key, "factor")),
                             static_cast<float>(rope_number(*it, key, "low_freq_factor")),
                             static_cast<float>(rope_number(*it, key, "high_freq_factor")), static_cast<int>(original)};
    }
  }
  const double value = theta.value_or(10000.0);
  if (!(value > 1.0) || !std::isfinite(value)) fail("rope_theta {} must be a finite number above 1", value);
  config.rope_theta = static_cast<float>(value);
}

}  // namespace

void refuse_hf_key(const char* key, const nlohmann::json& value, const std::string& why) {
  fail("config key '{}' = {} is not supported: {}", key, value.dump(), why);
}

const std::vector<HfConfigKey>& hf_config_keys() {
  // The shared keys, then each family's own (a family's key of a shared name is found second: the
  // catalogue's first entry of a name is the shared one).
  static const std::vector<HfConfigKey> catalogue = [] {
    std::vector<HfConfigKey> all = kKeys;
    for (const ModelFamily* family : model_families()) all.insert(all.end(), family->hf_keys.begin(), family->hf_keys.end());
    return all;
  }();
  return catalogue;
}

HfConfig parse_hf_config(const std::string& json_text, const std::string& source) {
  return with_context([&] { return source; }, [&] {
    nlohmann::json json = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
    if (json.is_discarded() || !json.is_object()) fail("not a JSON object");
    // The family (models/family/), named by model_type; Llama when there is none.
    const nlohmann::json model_type = json.value("model_type", nlohmann::json("llama"));
    const ModelFamily* family = model_type.is_string() ? find_family_by_hf_model_type(model_type.get<std::string>()) : nullptr;
    if (family == nullptr)
      refuse_hf_key("model_type", model_type, fmt::format("the families so far are {}", model_family_names()));
    // No key may go unread: an unknown one may change the computation. The family reads its own keys;
    // the shared checks below see only the others.
    for (const auto& item : json.items()) {
      const std::string& key = item.key();
      const bool known = family->reads_hf_key(key) ||
                         std::any_of(kKeys.begin(), kKeys.end(), [&key](const HfConfigKey& entry) { return key == entry.name; });
      if (!known) refuse_hf_key(key.c_str(), item.value(), "fedcal does not know this key, and it may change the computation");
    }
    const auto shared = [family](const char* key) { return !family->reads_hf_key(key); };
    const auto require = [&](const char* key, const nlohmann::json& expected, const std::string& why) {
      if (shared(key)) require_value(json, key, expected, why);
    };
    if (const auto it = json.find("architectures");
        it != json.end() && !it->is_null() && *it != nlohmann::json::array({family->hf_architecture}))
      refuse_hf_key("architectures", *it,
                    fmt::format("only [\"{}\"] for model_type {}", family->hf_architecture, model_type.dump()));
    require("hidden_act", "silu", "only \"silu\"");
    require("attention_bias", false, "biases on q/k/v/o are not supported (Qwen2's q/k/v biases are)");
    require("mlp_bias", false, "Llama has no MLP biases");
    require("rope_interleaved", false, "only the Hugging Face rotary layout");
    require("partial_rotary_factor", 1.0, "partial rotary embeddings are not supported");
    require("use_sliding_window", false, "sliding-window attention is not supported");
    if (const auto it = json.find("sliding_window");
        shared("sliding_window") && it != json.end() && !it->is_null() &&
        !(json.contains("use_sliding_window") && json["use_sliding_window"] == false)) {
      refuse_hf_key("sliding_window", *it, "sliding-window attention is not supported (without use_sliding_window = false)");
    }
    if (const auto it = json.find("layer_types"); shared("layer_types") && it != json.end() && !it->is_null()) {
      if (!it->is_array()) refuse_hf_key("layer_types", *it, "expected a list");
      for (const auto& type : *it) {
        if (type != "full_attention") refuse_hf_key("layer_types", *it, "every layer must be \"full_attention\"");
      }
    }
    HfConfig config;
    ModelConfig& m = config.model;
    m.dim = required_int(json, "hidden_size");
    m.hidden_dim = required_int(json, "intermediate_size");
    m.n_layers = required_int(json, "num_hidden_layers");
    m.n_heads = required_int(json, "num_attention_heads");
    m.n_kv_heads = json.contains("num_key_value_heads") && !json["num_key_value_heads"].is_null()
                       ? required_int(json, "num_key_value_heads")
                       : m.n_heads;
    m.vocab_size = required_int(json, "vocab_size");
    m.max_seq_len = required_int(json, "max_position_embeddings");
    m.norm_eps = optional_value(json, "rms_norm_eps", 1e-6f);
    if (shared("rope_parameters")) read_rope(json, m);
    m.shared_classifier = optional_value(json, "tie_word_embeddings", false);
    m.set_features(family->features);
    // An explicit head_dim that is not hidden_size / heads (Qwen3) widens q and the attention output.
    if (json.contains("head_dim") && !json["head_dim"].is_null() && required_int(json, "head_dim") * m.n_heads != m.dim)
      m.head_dim = required_int(json, "head_dim");
    if (const auto it = json.find("layer_types");
        shared("layer_types") && it != json.end() && it->is_array() && it->size() != static_cast<size_t>(m.n_layers))
      refuse_hf_key("layer_types", *it, fmt::format("{} entries for {} layers", it->size(), m.n_layers));
    if (family->read_hf_config != nullptr) family->read_hf_config(json, m);
    m.validate();
    config.bos_token_id = optional_token_id(json, "bos_token_id");
    config.eos_token_id = optional_token_id(json, "eos_token_id");
    return config;
  });
}

}  // namespace fedcal
