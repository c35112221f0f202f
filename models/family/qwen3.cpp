// Qwen3: Llama with a per-head RMSNorm of q and k before RoPE (weights of one head's width), and an
// explicit head_dim (128 on a 1024-wide residual with 16 heads in Qwen3 0.6B).
#include "models/family/family.h"

namespace fedcal {

const ModelFamily& qwen3_family() {
  static const ModelFamily kFamily = [] {
    auto tensors = llama_family().hf_layer_tensors;
    tensors.insert(tensors.end(), {{"q_norm", "self_attn.q_norm.weight"}, {"k_norm", "self_attn.k_norm.weight"}});
    ModelConfig::Features features;
    features.qk_norm = true;
    return ModelFamily{
        "qwen3",
        "Qwen3: Llama with per-head q/k RMSNorm",
        features,
        "qwen3",
        "Qwen3ForCausalLM",
        std::move(tensors),
        {},
        nullptr,
        nullptr,
        "qwen3",
        true,
        {},
        nullptr,
        nullptr,
    };
  }();
  return kFamily;
}

}  // namespace fedcal
