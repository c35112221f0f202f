// The architecture of a Llama-family decoder-only transformer.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

namespace fedcal {

// Llama 3's RoPE frequency scaling (transformers' rope_type "llama3"): wavelengths longer than
// original_max_seq_len / low_freq_factor are stretched by `factor`, those shorter than
// original_max_seq_len / high_freq_factor are kept, and the ones between are blended.
struct RopeScaling {
  float factor = 0;  // 0: no scaling
  float low_freq_factor = 1;
  float high_freq_factor = 4;
  int original_max_seq_len = 8192;
  bool enabled() const { return factor != 0; }
  bool operator==(const RopeScaling&) const = default;
};

// Every `global_every`-th layer global and the others local (sliding window), as Gemma 3 (6) lays
// them out: ModelConfig::local_layers for `n_layers` layers.
std::vector<uint8_t> local_layer_pattern(int n_layers, int global_every);

struct ModelConfig {
  int dim = 0;         // residual stream width (hidden_size)
  int hidden_dim = 0;  // SwiGLU feed-forward width (intermediate_size)
  int n_layers = 0;
  int n_heads = 0;     // query heads
  int n_kv_heads = 0;  // key/value heads (grouped-query attention when < n_heads)
  int vocab_size = 0;
  int max_seq_len = 0;  // context length
  float norm_eps = 1e-5f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  int head_dim = 0;  // 0: dim / n_heads; else explicit (Qwen3: 128 with dim 1024 and 16 heads)
  bool qk_norm = false;  // per-head RMSNorm of q and k before RoPE, weights q_norm / k_norm (Qwen3)
  bool qkv_bias = false; // biases on the q, k and v projections, bq / bk / bv (Qwen2, Qwen2.5)
  bool shared_classifier = true;  // output head tied to the token embedding
  // Gemma 3's variations:
  bool post_norms = false;       // each block's output RMS-normalized before its residual add (post_attn_norm, post_ffn_norm)
  bool norm_plus_one = false;    // every RMSNorm scales by (1 + weight), not weight
  bool embedding_scale = false;  // token embeddings multiplied by sqrt(dim)
  bool gelu_tanh = false;        // GeGLU with tanh-approximated GELU in place of SwiGLU's SiLU
  // Attention values (0 / empty: the Llama default):
  float query_scale_dim = 0;          // scores are q.k / sqrt(this) (query_pre_attn_scalar); 0: head_size
  int sliding_window = 0;             // a local layer attends to the last `sliding_window` positions, itself included
  std::vector<uint8_t> local_layers;  // (n_layers) 1 for a local (sliding-window) layer; empty: every layer global
  float rope_local_theta = 0;         // local layers' RoPE base (no scaling)
  float rope_linear_factor = 0;       // transformers' "linear" RoPE scaling (Gemma 3 4B and up): every
                                      // rotation rate divided by it, local layers' excepted; 0: none

  bool local_layer(int layer) const { return !local_layers.empty() && local_layers[static_cast<size_t>(layer)] != 0; }
  float attention_scale_dim() const { return query_scale_dim != 0 ? query_scale_dim : static_cast<float>(head_size()); }
  float attention_scale() const;  // 1 / sqrt(attention_scale_dim())
  // A norm's weights as the forward pass multiplies by them (w, or 1 + w with norm_plus_one; what
  // llama.cpp stores), and back.
  std::vector<float> norm_multipliers(const std::vector<float>& weights) const;
  std::vector<float> norm_weights(const std::vector<float>& multipliers) const;

  // The forward-pass variations a model family selects (models/family/): the flags above that are
  // not sizes. A config's family follows from them (family_of).
  struct Features {
    bool qk_norm = false;
    bool qkv_bias = false;
    bool post_norms = false;
    bool norm_plus_one = false;
    bool embedding_scale = false;
    bool gelu_tanh = false;
    bool operator==(const Features&) const = default;
  };
  Features features() const { return {qk_norm, qkv_bias, post_norms, norm_plus_one, embedding_scale, gelu_tanh}; }
  void set_features(const Features& features) {
    qk_norm = features.qk_norm;
    qkv_bias = features.qkv_bias;
    post_norms = features.post_norms;
    norm_plus_one = features.norm_plus_one;
    embedding_scale = features.embedding_scale;
    gelu_tanh = features.gelu_tanh;
  }
  std::string describe_features() const;  // "q/k norms", "none"

  int head_size() const { return head_dim != 0 ? head_dim : dim / n_heads; }
  int q_dim() const { return n_heads * head_size(); }  // width of q and of the attention output
  // The rotation rate of each pair i < head_size / 2: theta^(-2i / head_size), then rope_scaling.
  std::vector<double> rope_inverse_frequencies() const;
  // cos and sin of pair i's angle pos * frequency_i at every position, (max_seq_len, head_size / 2)
  // each: what the forward pass (and its ONNX export) rotates q and k by.
  struct RopeTables {
    std::vector<float> cos, sin;
  };
  RopeTables rope_tables() const;
  RopeTables local_rope_tables() const;  // of local layers: rope_local_theta, unscaled
  int kv_dim() const { return n_kv_heads * head_size(); }
  // Number of weights, counting a tied classifier once.
  int64_t parameter_count() const;
  // Throws Error describing the first inconsistent or absurd field (e.g. a corrupt header).
  void validate() const;
  std::string describe() const;

 private:
  std::string describe_llama_shape() const;
  std::vector<std::pair<bool, const char*>> named_features() const;  // qk_norm and qkv_bias first
};

}  // namespace fedcal
