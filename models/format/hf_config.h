// Hugging Face config.json, as transformers 4.x and 5.x write it, read so that no key that changes
// the computation is ever ignored: every key is in one catalogue (hf_config_keys) as used (read into
// the model), checked (accepted only at the value that computes what fedcal computes, else refused
// by name and value) or without effect on a forward pass (with the reason). A key that is in none is
// refused - it may change the math.
// transformers 5 moved rope_theta into rope_parameters (which also replaces rope_scaling); both
// layouts are read. RoPE: the default type and Llama 3's scaling; others are refused until implemented.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <vector>

#include "models/format/model_config.h"

namespace fedcal {

struct HfConfig {
  ModelConfig model;
  std::optional<int> bos_token_id;
  std::optional<int> eos_token_id;
};

// Parses config.json text; `source` names it in errors.
HfConfig parse_hf_config(const std::string& json_text, const std::string& source);

enum class HfKeyUse {
  kUsed,      // read into the model's configuration or tokens
  kChecked,   // accepted only where it computes what fedcal computes (a value, or a combination)
  kNoEffect,  // does not change a forward pass (training, storage, bookkeeping)
};
struct HfConfigKey {
  const char* name;
  HfKeyUse use;
  const char* why;  // for kNoEffect: why not; else what is read or required
};
const std::vector<HfConfigKey>& hf_config_keys();

// Throws Error: config key `key` = `value` is not supported, and `why`.
[[noreturn]] void refuse_hf_key(const char* key, const nlohmann::json& value, const std::string& why);

}  // namespace fedcal
