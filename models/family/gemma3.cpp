// Gemma 3 text models (model_type gemma3_text: 270M, 1B): embeddings scaled by sqrt(hidden_size);
// RMSNorm by (1 + weight); RMSNorm before and after both attention and the MLP; per-head q/k RMSNorm
// before RoPE; GeGLU with tanh-approximated GELU; scores scaled by 1/sqrt(query_pre_attn_scalar);
// sliding-window attention on the layers layer_types names, with their own RoPE base, and the
// global layers' RoPE linearly scaled when the config says so (4B and up); tied embeddings.
// config.json in the transformers 4.x layout (rope_theta, rope_local_base_freq, sliding_window_pattern
// in older files) and 5.x (rope_parameters per layer type) are both read.
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

// Which layers are local: layer_types, or (older files) every layer but each pattern-th (6 when
// neither says). A pattern given beside layer_types must agree with it.
std::vector<uint8_t> local_layers(const nlohmann::json& json, int n_layers) {
  constexpr const char* kPatternKeys[] = {"sliding_window_pattern", "_sliding_window_pattern"};
  const auto it = json.find("layer_types");
  if (it == json.end() || it->is_null()) {
    int pattern = 6;  // transformers' default
    for (const char* key : kPatternKeys) pattern = integer(json, key, pattern, 1 << 20);
    return local_layer_pattern(n_layers, pattern);
  }
  if (!it->is_array() || it->size() != static_cast<size_t>(n_layers))
    refuse_hf_key("layer_types", *it, fmt::format("expected a list of {} layer types", n_layers));
  std::vector<uint8_t> listed(static_cast<size_t>(n_layers));
  for (size_t l = 0; l < listed.size(); ++l) {
    const nlohmann::json& type = (*it)[l];
    if (type != "sliding_attention" && type != "full_attention")
      refuse_hf_key("layer_types", *it, "each layer is \"sliding_attention\" or \"full_attention\"");
    listed[l] = type == "sliding_attention";
  }
  for (const char* key : kPatternKeys) {
    if (json.contains(key) && !json[key].is_null() && local_layer_pattern(n_layers, integer(json, key, 6, 1 << 20)) != listed)
      refuse_hf_key(key, json.at(key), "it contradicts layer_types");
  }
  return listed;
}

// A RoPE parameter object (4.x rope_scaling, or one layer type's in 5.x rope_parameters): the default
// type, or "linear" with its factor where `linear_allowed` (the global layers); its rope_theta if any.
struct Rope {
  double theta = 0;   // 0: not given
  double linear = 0;  // 0: no scaling
};
Rope rope_object(const char* key, const nlohmann::json& whole, const nlohmann::json& object, bool linear_allowed) {
  if (!object.is_object()) refuse_hf_key(key, whole, "expected an object");
  const nlohmann::json type =
      object.contains("rope_type") ? object["rope_type"] : object.value("type", nlohmann::json("default"));
  if (type != "default" && !(linear_allowed && type == "linear"))
    refuse_hf_key(key, whole,
                  fmt::format("RoPE type {} is not supported ({})", type.dump(),
                              linear_allowed ? "the default and \"linear\" are" : "local layers rotate by the default type"));
  Rope rope;
  for (const auto& [name, value] : object.items()) {
    if (name == "rope_type" || name == "type") continue;
    const bool finite = value.is_number() && std::isfinite(value.get<double>());
    if (name == "rope_theta" && finite && value.get<double>() > 1) {
      rope.theta = value.get<double>();
    } else if (name == "factor" && type == "linear" && finite && value.get<double>() >= 1 && value.get<double>() <= 1024) {
      rope.linear = value.get<double>();
    } else {
      refuse_hf_key(key, whole, fmt::format("'{}' = {} is not a parameter of RoPE type {}", name, value.dump(), type.dump()));
    }
  }
  if (type == "linear" && rope.linear == 0) refuse_hf_key(key, whole, "linear RoPE scaling needs its factor");
  return rope;
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

  // RoPE: the global layers' base and scaling, the local layers' base (4.x: top-level keys and
  // rope_scaling; 5.x: rope_parameters per layer type; both given, they must agree).
  double global = number(json, "rope_theta", 1000000.0, 1.0000001, 1e12);
  double local = number(json, "rope_local_base_freq", 10000.0, 1.0000001, 1e12);
  double linear = 0;
  if (const auto it = json.find("rope_scaling"); it != json.end() && !it->is_null()) {
    const Rope scaling = rope_object("rope_scaling", *it, *it, true);
    if (scaling.theta != 0) refuse_hf_key("rope_scaling", *it, "rope_theta belongs at the top level");
    linear = scaling.linear;
  }
  if (const auto it = json.find("rope_parameters"); it != json.end() && !it->is_null()) {
    if (!it->is_object()) refuse_hf_key("rope_parameters", *it, "expected an object");
    for (const auto& [name, value] : it->items()) {
      if (name != "full_attention" && name != "sliding_attention")
        refuse_hf_key("rope_parameters", *it, fmt::format("'{}' is not a Gemma 3 layer type", name));
    }
    for (const char* type : {"full_attention", "sliding_attention"}) {
      if (!it->contains(type)) refuse_hf_key("rope_parameters", *it, fmt::format("expected an object for \"{}\"", type));
    }
    const Rope full = rope_object("rope_parameters", *it, (*it)["full_attention"], true);
    const Rope sliding = rope_object("rope_parameters", *it, (*it)["sliding_attention"], false);
    if (full.theta == 0 || sliding.theta == 0) refuse_hf_key("rope_parameters", *it, "each layer type needs its rope_theta");
    if ((json.contains("rope_theta") && global != full.theta) ||
        (json.contains("rope_local_base_freq") && local != sliding.theta) ||
        (json.contains("rope_scaling") && !json["rope_scaling"].is_null() && linear != full.linear))
      refuse_hf_key("rope_parameters", *it, "it differs from the top-level rope_theta, rope_local_base_freq or rope_scaling");
    global = full.theta;
    local = sliding.theta;
    linear = full.linear;
  }
  c.rope_linear_factor = static_cast<float>(linear);
  c.rope_theta = static_cast<float>(global);
  c.rope_local_theta = static_cast<float>(local);
}

void write_gemma3(const ModelConfig& c, nlohmann::json& json) {
  json.erase("hidden_act");
  json["hidden_activation"] = kActivation;
  json["head_dim"] = c.head_size();
  json["query_pre_attn_scalar"] = c.attention_scale_dim();
  json["sliding_window"] = c.sliding_window;
  json["rope_local_base_freq"] = c.rope_local_theta;
  if (c.rope_linear_factor != 0) json["rope_scaling"] = {{"rope_type", "linear"}, {"factor", c.rope_linear_factor}};
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

float gguf_query_scale_dim(const ModelConfig& c) {
  return c.n_layers == 62 ? static_cast<float>(c.dim / c.n_heads) : static_cast<float>(c.head_size());
}

void write_gemma3_gguf(const ModelConfig& c, GgufWriter& out, const std::string& arch) {
  const std::vector<uint8_t> gguf_layers = local_layer_pattern(c.n_layers, kGgufPattern);
  for (int l = 0; l < c.n_layers; ++l) {
    if (c.local_layer(l) != (gguf_layers[static_cast<size_t>(l)] != 0))
      fail("GGUF export: layer {} is {}, but llama.cpp's gemma3 makes every {}th layer global and the others local", l,
           c.local_layer(l) ? "local" : "global", kGgufPattern);
  }
  if (c.rope_local_theta != kGgufLocalTheta)
    fail("GGUF export: the local layers' RoPE base {} is not llama.cpp's fixed {}", c.rope_local_theta, kGgufLocalTheta);
  if (c.attention_scale_dim() != gguf_query_scale_dim(c))
    fail("GGUF export: query_pre_attn_scalar {} is not the {} llama.cpp's gemma3 scales by for this shape",
         c.attention_scale_dim(), gguf_query_scale_dim(c));
  out.set(arch + ".attention.sliding_window", GgufValue::u32(static_cast<uint32_t>(c.sliding_window)));
  if (c.rope_linear_factor != 0) {  // llama.cpp scales the global layers' rotation only, as transformers does
    out.set(arch + ".rope.scaling.type", GgufValue::string("linear"));
    out.set(arch + ".rope.scaling.factor", GgufValue::f32(c.rope_linear_factor));
  }
}

void read_gemma3_gguf(const GgufFile& file, const std::string& arch, ModelConfig& c) {
  const std::string key = arch + ".attention.sliding_window";
  const int64_t window = file.integer(key);
  if (window < 1 || window > (int64_t{1} << 24)) fail("{}: metadata '{}' = {} is out of range", file.source, key, window);
  c.sliding_window = static_cast<int>(window);
  c.local_layers = local_layer_pattern(c.n_layers, kGgufPattern);
  c.rope_local_theta = kGgufLocalTheta;
  c.query_scale_dim = gguf_query_scale_dim(c);
  if (const GgufValue* type = file.find(arch + ".rope.scaling.type");
      type != nullptr && file.text(arch + ".rope.scaling.type") != "none") {
    if (file.text(arch + ".rope.scaling.type") != "linear")
      fail("{}: metadata '{}.rope.scaling.type' = '{}' is not supported (linear is)", file.source, arch,
           file.text(arch + ".rope.scaling.type"));
    c.rope_linear_factor = static_cast<float>(file.number(arch + ".rope.scaling.factor"));
  }
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
            {"rope_parameters", HfKeyUse::kUsed,
             "per layer type, the RoPE type (the global layers' may be \"linear\") and its rope_theta (transformers 5)"},
            {"rope_scaling", HfKeyUse::kUsed,
             "null, or \"linear\" scaling of the global layers' RoPE by its factor (transformers 4)"},
            {"final_logit_softcapping", HfKeyUse::kChecked, "null: no soft-capping of the logits"},
            {"attn_logit_softcapping", HfKeyUse::kChecked, "null: no soft-capping of the attention scores"},
            {"use_bidirectional_attention", HfKeyUse::kChecked, "false: causal attention"},
            {"cache_implementation", HfKeyUse::kNoEffect, "how transformers lays out its KV cache; the math is the same"},
        },
        read_gemma3,
        write_gemma3,
        "gemma3",
        true,  // llama.cpp rotates Gemma's q and k half-split
        {"attention.sliding_window", "rope.scaling.type", "rope.scaling.factor"},
        write_gemma3_gguf,
        read_gemma3_gguf,
    };
  }();
  return kFamily;
}

}  // namespace fedcal
