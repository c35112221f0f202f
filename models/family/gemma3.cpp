// Gemma 3 text models (model_type gemma3_text: 270M, 1B): embeddings scaled by sqrt(hidden_size);
// RMSNorm by (1 + weight); RMSNorm before and after both attention and the MLP; per-head q/k RMSNorm
// before RoPE; GeGLU with tanh-approximated GELU; scores scaled by 1/sqrt(query_pre_attn_scalar);
// sliding-window attention on the layers layer_types names, with their own RoPE base; tied
// embeddings. config.json in the transformers 4.x layout (rope_theta, rope_local_base_freq,
// sliding_window_pattern in older files) and 5.x (rope_parameters per layer type) are both read.
#include <nlohmann/json.hpp>

#include <cmath>

#include "common/error.h"
#include "models/family/family.h"

namespace fedcal {
namespace {

constexpr const char* kActivation = "gelu_pytorch_tanh";

// A number of `json` under `key`, `fallback` when absent or null; refused by name unless it is finite
// and in [low, high].
double number(const nlohmann::json& json, const char* key, double fallback, double low, double high) {
  const auto it = json.find(key);
  if (it == json.end() || it->is_null()) return fallback;
  if (!it->is_number() || !std::isfinite(it->get<double>()) || it->get<double>() < low || it->get<double>() > high)
    refuse_hf_key(key, *it, fmt::format("expected a number in [{}, {}]", low, high));
  return it->get<double>();
}

int integer(const nlohmann::json& json, const char* key, int fallback, int high) {
  const double value = number(json, key, fallback, 1, high);
  if (value != std::floor(value)) refuse_hf_key(key, json.at(key), "expected an integer");
  return static_cast<int>(value);
}

// Which layers are local: layer_types, or (older files) every layer but each pattern-th.
std::vector<uint8_t> local_layers(const nlohmann::json& json, int n_layers) {
  std::vector<uint8_t> local(static_cast<size_t>(n_layers));
  for (const char* key : {"sliding_window_pattern", "_sliding_window_pattern"}) {
    if (!json.contains(key) || json[key].is_null()) continue;
    const int pattern = integer(json, key, 6, 1 << 20);
    for (int l = 0; l < n_layers; ++l) local[static_cast<size_t>(l)] = (l + 1) % pattern != 0;
    if (json.contains("layer_types")) break;  // checked against layer_types below
  }
  if (!json.contains("sliding_window_pattern") && !json.contains("_sliding_window_pattern") && !json.contains("layer_types")) {
    for (int l = 0; l < n_layers; ++l) local[static_cast<size_t>(l)] = (l + 1) % 6 != 0;  // transformers' default
  }
  const auto it = json.find("layer_types");
  if (it == json.end() || it->is_null()) return local;
  if (!it->is_array() || it->size() != static_cast<size_t>(n_layers))
    refuse_hf_key("layer_types", *it, fmt::format("expected a list of {} layer types", n_layers));
  std::vector<uint8_t> listed(local.size());
  for (size_t l = 0; l < listed.size(); ++l) {
    const nlohmann::json& type = (*it)[l];
    if (type != "sliding_attention" && type != "full_attention")
      refuse_hf_key("layer_types", *it, "each layer is \"sliding_attention\" or \"full_attention\"");
    listed[l] = type == "sliding_attention";
  }
  for (const char* key : {"sliding_window_pattern", "_sliding_window_pattern"}) {
    if (json.contains(key) && !json[key].is_null() && local != listed)
      refuse_hf_key(key, json.at(key), "it contradicts layer_types");
  }
  return listed;
}

// One layer type's RoPE in transformers 5's rope_parameters: the default type and its base only.
double rope_base(const nlohmann::json& parameters, const char* type) {
  const auto it = parameters.find(type);
  if (it == parameters.end() || !it->is_object())
    refuse_hf_key("rope_parameters", parameters, fmt::format("expected an object for \"{}\"", type));
  for (const auto& [name, value] : it->items()) {
    if (name == "rope_type" && value == "default") continue;
    if (name == "rope_theta" && value.is_number() && value.get<double>() > 1 && std::isfinite(value.get<double>())) continue;
    refuse_hf_key("rope_parameters", parameters,
                  fmt::format("{}: only the default RoPE type and its rope_theta (not '{}' = {})", type, name, value.dump()));
  }
  if (!it->contains("rope_theta")) refuse_hf_key("rope_parameters", parameters, fmt::format("{}: no rope_theta", type));
  return (*it)["rope_theta"].get<double>();
}

void read_gemma3(const nlohmann::json& json, ModelConfig& c) {
  for (const char* key : {"hidden_activation", "hidden_act"}) {
    if (json.contains(key) && !json[key].is_null() && json[key] != kActivation)
      refuse_hf_key(key, json.at(key), fmt::format("Gemma 3's MLP is GeGLU with \"{}\"", kActivation));
  }
  for (const char* key : {"final_logit_softcapping", "attn_logit_softcapping"}) {
    if (json.contains(key) && !json[key].is_null()) refuse_hf_key(key, json.at(key), "soft-capping (Gemma 2's) is not supported");
  }
  if (json.contains("use_bidirectional_attention") && json["use_bidirectional_attention"] != false)
    refuse_hf_key("use_bidirectional_attention", json.at("use_bidirectional_attention"), "only causal attention");
  if (!json.contains("tie_word_embeddings")) c.shared_classifier = true;  // Gemma 3's default
  const int head_dim = integer(json, "head_dim", 256, 4096);
  c.head_dim = head_dim * c.n_heads == c.dim ? 0 : head_dim;
  c.query_scale_dim = static_cast<float>(number(json, "query_pre_attn_scalar", 256, 1, 65536));
  c.sliding_window = integer(json, "sliding_window", 4096, 1 << 24);
  c.local_layers = local_layers(json, c.n_layers);

  // RoPE: global layers' base, local layers' base; no scaling yet (refused by name).
  if (json.contains("rope_scaling") && !json["rope_scaling"].is_null())
    refuse_hf_key("rope_scaling", json["rope_scaling"], "RoPE scaling of Gemma 3's global layers is not supported yet");
  double global = number(json, "rope_theta", 1000000.0, 1.0000001, 1e12);
  double local = number(json, "rope_local_base_freq", 10000.0, 1.0000001, 1e12);
  if (const auto it = json.find("rope_parameters"); it != json.end() && !it->is_null()) {
    if (!it->is_object()) refuse_hf_key("rope_parameters", *it, "expected an object");
    for (const auto& [name, value] : it->items()) {
      if (name != "full_attention" && name != "sliding_attention")
        refuse_hf_key("rope_parameters", *it, fmt::format("'{}' is not a Gemma 3 layer type", name));
    }
    const double listed_global = rope_base(*it, "full_attention"), listed_local = rope_base(*it, "sliding_attention");
    if ((json.contains("rope_theta") && global != listed_global) ||
        (json.contains("rope_local_base_freq") && local != listed_local))
      refuse_hf_key("rope_parameters", *it, "its rope_theta values differ from the top-level ones");
    global = listed_global;
    local = listed_local;
  }
  c.rope_theta = static_cast<float>(global);
  c.rope_local_theta = static_cast<float>(local);
}

void write_gemma3(const ModelConfig& c, nlohmann::json& json) {
  json.erase("hidden_act");
  json["hidden_activation"] = kActivation;
  json["head_dim"] = c.head_size();
  json["query_pre_attn_scalar"] = c.query_scale_dim != 0 ? c.query_scale_dim : static_cast<float>(c.head_size());
  json["sliding_window"] = c.sliding_window;
  json["rope_local_base_freq"] = c.rope_local_theta;
  nlohmann::json types = nlohmann::json::array();
  for (int l = 0; l < c.n_layers; ++l) types.push_back(c.local_layer(l) ? "sliding_attention" : "full_attention");
  json["layer_types"] = types;
  json["final_logit_softcapping"] = nullptr;
  json["attn_logit_softcapping"] = nullptr;
}

// llama.cpp's gemma3 (src/llama-hparams.cpp, its graph builder) fixes what config.json says: every 6th
// layer global, the local layers' RoPE base 10000, scores by 1/sqrt(head size) (the 27B's by
// 1/sqrt(dim / heads)). Only the sliding window is a key.
constexpr int kGgufPattern = 6;
constexpr float kGgufLocalTheta = 10000.0f;

bool gguf_local_layer(int layer) { return (layer + 1) % kGgufPattern != 0; }

float gguf_query_scale_dim(const ModelConfig& c) {
  return c.n_layers == 62 ? static_cast<float>(c.dim / c.n_heads) : static_cast<float>(c.head_size());
}

void write_gemma3_gguf(const ModelConfig& c, GgufWriter& out, const std::string& arch) {
  for (int l = 0; l < c.n_layers; ++l) {
    if (c.local_layer(l) != gguf_local_layer(l))
      fail("GGUF export: layer {} is {}, but llama.cpp's gemma3 makes every {}th layer global and the others local", l,
           c.local_layer(l) ? "local" : "global", kGgufPattern);
  }
  if (c.rope_local_theta != kGgufLocalTheta)
    fail("GGUF export: the local layers' RoPE base {} is not llama.cpp's fixed {}", c.rope_local_theta, kGgufLocalTheta);
  const float scale_dim = c.query_scale_dim != 0 ? c.query_scale_dim : static_cast<float>(c.head_size());
  if (scale_dim != gguf_query_scale_dim(c))
    fail("GGUF export: query_pre_attn_scalar {} is not the {} llama.cpp's gemma3 scales by for this shape", scale_dim,
         gguf_query_scale_dim(c));
  out.set(arch + ".attention.sliding_window", GgufValue::u32(static_cast<uint32_t>(c.sliding_window)));
}

void read_gemma3_gguf(const GgufFile& file, const std::string& arch, ModelConfig& c) {
  const std::string key = arch + ".attention.sliding_window";
  const int64_t window = file.integer(key);
  if (window < 1 || window > (int64_t{1} << 24)) fail("{}: metadata '{}' = {} is out of range", file.source, key, window);
  c.sliding_window = static_cast<int>(window);
  c.local_layers.clear();
  for (int l = 0; l < c.n_layers; ++l) c.local_layers.push_back(gguf_local_layer(l) ? 1 : 0);
  c.rope_local_theta = kGgufLocalTheta;
  c.query_scale_dim = gguf_query_scale_dim(c);
}

}  // namespace

const ModelFamily& gemma3_family() {
  static const ModelFamily kFamily = [] {
    ModelConfig::Features features;
    features.qk_norm = features.post_norms = features.norm_plus_one = features.embedding_scale = features.gelu_tanh = true;
    return ModelFamily{
        "gemma3",
        "Gemma 3: (1 + w) RMSNorm before and after each block, q/k norms, GeGLU, sliding-window layers, scaled embeddings",
        features,
        "gemma3_text",
        "Gemma3ForCausalLM",
        {
            {"attn_norm", "input_layernorm.weight"},
            {"wq", "self_attn.q_proj.weight"},
            {"wk", "self_attn.k_proj.weight"},
            {"wv", "self_attn.v_proj.weight"},
            {"wo", "self_attn.o_proj.weight"},
            {"q_norm", "self_attn.q_norm.weight"},
            {"k_norm", "self_attn.k_norm.weight"},
            {"post_attn_norm", "post_attention_layernorm.weight"},
            {"ffn_norm", "pre_feedforward_layernorm.weight"},
            {"w1", "mlp.gate_proj.weight"},
            {"w2", "mlp.down_proj.weight"},
            {"w3", "mlp.up_proj.weight"},
            {"post_ffn_norm", "post_feedforward_layernorm.weight"},
        },
        {
            {"hidden_activation", HfKeyUse::kChecked, "\"gelu_pytorch_tanh\": GeGLU (the default)"},
            {"hidden_act", HfKeyUse::kChecked, "absent, or \"gelu_pytorch_tanh\" as hidden_activation"},
            {"query_pre_attn_scalar", HfKeyUse::kUsed, "scores are q.k / sqrt(it) (default 256)"},
            {"sliding_window", HfKeyUse::kUsed, "the positions a local layer attends to, itself included (default 4096)"},
            {"layer_types", HfKeyUse::kUsed, "\"sliding_attention\" (local) or \"full_attention\" (global) per layer"},
            {"sliding_window_pattern", HfKeyUse::kUsed, "without layer_types: every pattern-th layer global (default 6)"},
            {"_sliding_window_pattern", HfKeyUse::kChecked, "as sliding_window_pattern; must agree with layer_types"},
            {"rope_theta", HfKeyUse::kUsed, "the global layers' RoPE base (transformers 4; default 1000000)"},
            {"rope_local_base_freq", HfKeyUse::kUsed, "the local layers' RoPE base (transformers 4; default 10000)"},
            {"rope_parameters", HfKeyUse::kUsed, "per layer type, the default RoPE type and its rope_theta (transformers 5)"},
            {"rope_scaling", HfKeyUse::kChecked,
             "null: global layers' RoPE scaling (larger Gemma 3 models) is not supported yet"},
            {"final_logit_softcapping", HfKeyUse::kChecked, "null: no soft-capping of the logits"},
            {"attn_logit_softcapping", HfKeyUse::kChecked, "null: no soft-capping of the attention scores"},
            {"use_bidirectional_attention", HfKeyUse::kChecked, "false: causal attention"},
            {"cache_implementation", HfKeyUse::kNoEffect, "how transformers lays out its KV cache; the math is the same"},
        },
        read_gemma3,
        write_gemma3,
        "gemma3",
        true,  // llama.cpp rotates Gemma's q and k half-split
        {"attention.sliding_window"},
        write_gemma3_gguf,
        read_gemma3_gguf,
    };
  }();
  return kFamily;
}

}  // namespace fedcal
