// Qwen2 and Qwen2.5: Llama with biases on the q, k and v projections (no o bias). Its config.json
// has no attention_bias switch: the biases come with the family.
#include "models/family/family.h"

#include <nlohmann/json.hpp>

#include "models/format/hf_config.h"

namespace fedcal {

const ModelFamily& qwen2_family() {
  static const ModelFamily kFamily = [] {
    auto tensors = llama_family().hf_layer_tensors;
    tensors.insert(tensors.end(),
                   {{"bq", "self_attn.q_proj.bias"}, {"bk", "self_attn.k_proj.bias"}, {"bv", "self_attn.v_proj.bias"}});
    ModelConfig::Features features;
    features.qkv_bias = true;
    return ModelFamily{
        "qwen2",
        "Qwen2 / Qwen2.5: Llama with q/k/v biases",
        features,
        "qwen2",
        "Qwen2ForCausalLM",
        std::move(tensors),
        {},
        [](const nlohmann::json& json, ModelConfig&) {
          if (json.contains("attention_bias"))
            refuse_hf_key("attention_bias", json["attention_bias"],
                          "Qwen2 does not read it: its q/k/v biases come with the family");
        },
        nullptr,
        "qwen2",
        true,
        {},
        nullptr,
        nullptr,
    };
  }();
  return kFamily;
}

}  // namespace fedcal
