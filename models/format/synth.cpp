#include "models/format/synth.h"

#include <cmath>
#include <random>

#include "common/error.h"
#include "models/family/family.h"
#include "models/family/layer_tensors.h"

namespace fedcal {
namespace {

ModelConfig make_config(int dim, int hidden, int layers, int heads, int kv_heads, int vocab, int seq_len, bool shared,
                        float theta = 10000.0f, float eps = 1e-5f) {
  ModelConfig c;
  c.dim = dim;
  c.hidden_dim = hidden;
  c.n_layers = layers;
  c.n_heads = heads;
  c.n_kv_heads = kv_heads;
  c.vocab_size = vocab;
  c.max_seq_len = seq_len;
  c.shared_classifier = shared;
  c.rope_theta = theta;
  c.norm_eps = eps;
  return c;
}

// A portable normal generator: std::normal_distribution's output differs between standard libraries.
class NormalSource {
 public:
  explicit NormalSource(uint64_t seed) : rng_(seed) {}
  float next() {
    // Box-Muller on two 53-bit uniforms in (0, 1].
    const double u1 = (static_cast<double>(rng_() >> 11) + 1.0) * 0x1p-53;
    const double u2 = static_cast<double>(rng_() >> 11) * 0x1p-53;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2));
  }

 private:
  std::mt19937_64 rng_;
};

ModelConfig with_qk_norm(ModelConfig config) {
  config.qk_norm = true;
  return config;
}

ModelConfig with_qkv_bias(ModelConfig config) {
  config.qkv_bias = true;
  return config;
}

ModelConfig with_head_dim(ModelConfig config, int head_dim) {
  config.head_dim = head_dim;
  return config;
}

// Gemma 3's features, with every pattern-th layer global and the others local (sliding window).
ModelConfig with_gemma3(ModelConfig config, int head_dim, float query_scale_dim, int window, int pattern) {
  config.set_features(gemma3_family().features);
  config.head_dim = head_dim;
  config.query_scale_dim = query_scale_dim;
  config.sliding_window = window;
  config.rope_local_theta = 10000.0f;
  config.local_layers = local_layer_pattern(config.n_layers, pattern);
  return config;
}

ModelConfig with_linear_rope(ModelConfig config, float factor) {
  config.rope_linear_factor = factor;
  return config;
}

ModelConfig with_llama3_rope(ModelConfig config, RopeScaling scaling) {
  config.rope_scaling = scaling;
  return config;
}

}  // namespace

const std::vector<SynthPreset>& synth_presets() {
  static const std::vector<SynthPreset> presets = {
      {"tiny", "2 layers, dim 64, 4 heads / 2 KV heads, vocab 512 (tests)", make_config(64, 176, 2, 4, 2, 512, 128, true)},
      {"tiny-mha", "2 layers, dim 48, 3 heads, untied head, vocab 300 (tests)", make_config(48, 128, 2, 3, 3, 300, 96, false)},
      {"tiny-llama3", "tiny with Llama 3's RoPE: theta 500000, scaling 8x from a 64-token original context (tests)",
       with_llama3_rope(make_config(64, 176, 2, 4, 2, 512, 128, true, 500000.0f), {8.0f, 1.0f, 4.0f, 64})},
      {"tiny-head-dim", "tiny with an explicit head_dim of 32 (q and attention output 128 wide, as Qwen3 does) (tests)",
       with_head_dim(make_config(64, 176, 2, 4, 2, 512, 128, true), 32)},
      {"tiny-qwen3", "tiny shaped like Qwen3: head_dim 32, q/k norms, theta 1000000 (tests)",
       with_qk_norm(with_head_dim(make_config(64, 176, 2, 4, 2, 512, 128, true, 1000000.0f), 32))},
      {"tiny-smollm2", "tiny shaped like SmolLM2: 9 heads / 3 KV heads of 8, theta 100000, eps 1e-5, tied (tests)",
       make_config(72, 192, 2, 9, 3, 512, 128, true, 100000.0f)},
      {"tiny-qwen2", "tiny shaped like Qwen2.5: biases on q, k and v, theta 1000000 (tests)",
       with_qkv_bias(make_config(64, 176, 2, 4, 2, 512, 128, true, 1000000.0f))},
      {"tiny-gemma3",
       "tiny shaped like Gemma 3: 3 layers (2 local with a window of 16, then 1 global), 4 heads / 1 KV head of 32, "
       "query_pre_attn_scalar 24, theta 1000000 / 10000 (tests)",
       with_gemma3(make_config(64, 176, 3, 4, 1, 512, 128, true, 1000000.0f, 1e-6f), 32, 24.0f, 16, 3)},
      {"tiny-gemma3-linear",
       "tiny-gemma3 with linear RoPE scaling x4 of its global layer, as Gemma 3 4B and up scale by 8 (tests)",
       with_linear_rope(with_gemma3(make_config(64, 176, 3, 4, 1, 512, 128, true, 1000000.0f, 1e-6f), 32, 24.0f, 16, 3), 4.0f)},
      {"tiny-gemma3-gguf",
       "tiny Gemma 3 in llama.cpp's gemma3 layout: 6 layers (every 6th global, window 16), 4 heads / 1 KV head of 32, "
       "query_pre_attn_scalar 32 (tests)",
       with_gemma3(make_config(64, 176, 6, 4, 1, 512, 128, true, 1000000.0f, 1e-6f), 32, 32.0f, 16, 6)},
      {"small", "4 layers, dim 256, 8 heads / 4 KV heads, vocab 2048", make_config(256, 688, 4, 8, 4, 2048, 256, true)},
      {"smollm-135m", "SmolLM-135M shape: 30 layers, dim 576, 9 heads / 3 KV heads, vocab 49152",
       make_config(576, 1536, 30, 9, 3, 49152, 2048, true, 10000.0f)},
      {"gemma3-270m",
       "Gemma 3 270M shape: 18 layers (every 6th global, window 512), dim 640, 4 heads / 1 KV head of 256, "
       "vocab 262144, context 2048 (of its 32768)",
       with_gemma3(make_config(640, 2048, 18, 4, 1, 262144, 2048, true, 1000000.0f, 1e-6f), 256, 256.0f, 512, 6)},
      {"tinyllama-1.1b", "TinyLlama-1.1B shape: 22 layers, dim 2048, 32 heads / 4 KV heads, vocab 32000",
       make_config(2048, 5632, 22, 32, 4, 32000, 2048, false, 10000.0f)},
  };
  return presets;
}

const SynthPreset& find_synth_preset(const std::string& name) {
  std::string names;
  for (const SynthPreset& preset : synth_presets()) {
    if (preset.name == name) return preset;
    names += (names.empty() ? "" : ", ") + preset.name;
  }
  fail("unknown preset '{}' (known: {})", name, names);
}

Model synthesize_model(const ModelConfig& config, uint64_t seed) {
  Model model = allocate_model(config);
  NormalSource normal(seed);
  for (TensorRef& tensor : list_tensors(model)) {
    // Norms near 1, biases (Qwen2's q/k/v) around 0 with a spread of 0.5, matrices ~ N(0, 1 / in).
    const std::optional<LayerTensorName> layer_tensor = find_layer_tensor(tensor.name);
    const bool is_bias = layer_tensor && layer_tensor->tensor->role == TensorRole::kBias;
    const bool is_norm = tensor.rows == 1 && !is_bias;
    const float scale = is_bias ? 0.5f : is_norm ? 0.1f : 1.0f / std::sqrt(static_cast<float>(tensor.cols));
    const float norm_center = config.norm_plus_one ? 0.0f : 1.0f;  // (1 + w) norms: w near 0
    for (float& value : *tensor.data) value = (is_norm ? norm_center : 0.0f) + scale * normal.next();
  }
  return model;
}

}  // namespace fedcal
