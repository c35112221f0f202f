#include "models/format/model_config.h"

#include <fmt/format.h>

#include <cmath>
#include <span>

#include "common/error.h"
#include "models/family/layer_tensors.h"

namespace fedcal {
namespace {

// Far beyond any model fedcal targets, small enough that sizes computed from them cannot overflow.
constexpr int kMaxDim = 1 << 16;
constexpr int kMaxLayers = 1024;
constexpr int kMaxHeads = 1024;
constexpr int kMaxVocab = 1 << 22;
constexpr int kMaxSeqLen = 1 << 20;

void check_range(const char* field, int value, int max) {
  if (value < 1 || value > max) fail("{} = {} is out of range [1, {}]", field, value, max);
}

}  // namespace

int64_t ModelConfig::parameter_count() const {
  int64_t per_layer = 0;
  for (const LayerTensor* tensor : layer_tensors(*this))
    per_layer += int64_t{tensor->row_count(*this)} * tensor->col_count(*this);
  const int64_t d = dim, v = vocab_size;
  return v * d + n_layers * per_layer + d + (shared_classifier ? 0 : v * d);
}

std::vector<std::pair<bool, const char*>> ModelConfig::named_features() const {
  return {{qk_norm, "q/k norms"},           {qkv_bias, "q/k/v biases"},           {post_norms, "post-norms"},
          {norm_plus_one, "(1 + w) norms"}, {embedding_scale, "embedding scale"}, {gelu_tanh, "GeGLU"}};
}

std::string ModelConfig::describe_features() const {
  std::string out;
  for (const auto& [on, name] : named_features()) {
    if (on) out += std::string(out.empty() ? "" : ", ") + name;
  }
  return out.empty() ? "none" : out;
}

void ModelConfig::validate() const {
  check_range("dim", dim, kMaxDim);
  check_range("hidden_dim", hidden_dim, 4 * kMaxDim);
  check_range("n_layers", n_layers, kMaxLayers);
  check_range("n_heads", n_heads, kMaxHeads);
  check_range("n_kv_heads", n_kv_heads, kMaxHeads);
  check_range("vocab_size", vocab_size, kMaxVocab);
  check_range("max_seq_len", max_seq_len, kMaxSeqLen);
  if (head_dim == 0 && dim % n_heads != 0) fail("dim {} is not a multiple of n_heads {}", dim, n_heads);
  if (head_dim != 0) check_range("head_dim", head_dim, 4096);
  if (int64_t{n_heads} * head_size() > 4 * int64_t{kMaxDim}) fail("n_heads {} x head_dim {} is too wide", n_heads, head_size());
  if (head_size() % 2 != 0) fail("head size {} is odd; rotary embeddings rotate pairs", head_size());
  if (n_heads % n_kv_heads != 0) fail("n_heads {} is not a multiple of n_kv_heads {}", n_heads, n_kv_heads);
  if (!(norm_eps > 0.0f) || !std::isfinite(norm_eps) || norm_eps > 1.0f) fail("norm_eps {} is not in (0, 1]", norm_eps);
  if (!(rope_theta > 1.0f) || !std::isfinite(rope_theta)) fail("rope_theta {} must be a finite number > 1", rope_theta);
  if (rope_scaling.enabled()) {
    const RopeScaling& s = rope_scaling;
    if (!(s.factor >= 1.0f && s.factor <= 1024.0f)) fail("rope scaling factor {} is not in [1, 1024]", s.factor);
    if (!(s.low_freq_factor > 0.0f && s.low_freq_factor < s.high_freq_factor && s.high_freq_factor <= 1024.0f))
      fail("rope scaling low_freq_factor {} and high_freq_factor {}: need 0 < low < high <= 1024", s.low_freq_factor,
           s.high_freq_factor);
    check_range("rope scaling original_max_position_embeddings", s.original_max_seq_len, kMaxSeqLen);
  }
  if (rope_linear_factor != 0 && !(rope_linear_factor >= 1.0f && rope_linear_factor <= 1024.0f))
    fail("linear rope scaling factor {} is not in [1, 1024]", rope_linear_factor);
  if (rope_linear_factor != 0 && rope_scaling.enabled()) fail("linear and Llama 3 rope scaling together");
  if (query_scale_dim != 0 && !(query_scale_dim >= 1.0f && query_scale_dim <= 65536.0f))
    fail("query_pre_attn_scalar {} is not in [1, 65536]", query_scale_dim);
  if (!local_layers.empty()) {
    if (local_layers.size() != static_cast<size_t>(n_layers)) fail("{} layer types for {} layers", local_layers.size(), n_layers);
    check_range("sliding_window", sliding_window, kMaxSeqLen);
    if (!(rope_local_theta > 1.0f) || !std::isfinite(rope_local_theta))
      fail("local layers' rope theta {} must be a finite number > 1", rope_local_theta);
  } else if (sliding_window != 0) {
    fail("sliding_window {} without local layers", sliding_window);
  }
}

float ModelConfig::attention_scale() const { return 1.0f / std::sqrt(attention_scale_dim()); }

std::vector<float> ModelConfig::norm_multipliers(const std::vector<float>& weights) const {
  std::vector<float> out = weights;
  if (norm_plus_one) {
    for (float& value : out) value += 1.0f;
  }
  return out;
}

std::vector<float> ModelConfig::norm_weights(const std::vector<float>& multipliers) const {
  std::vector<float> out = multipliers;
  if (norm_plus_one) {
    for (float& value : out) value -= 1.0f;
  }
  return out;
}

std::vector<uint8_t> local_layer_pattern(int n_layers, int global_every) {
  std::vector<uint8_t> local;
  for (int l = 0; l < n_layers; ++l) local.push_back((l + 1) % global_every != 0 ? 1 : 0);
  return local;
}

ModelConfig::RopeTables ModelConfig::local_rope_tables() const {
  ModelConfig local = *this;
  local.rope_theta = rope_local_theta;
  local.rope_scaling = {};
  local.rope_linear_factor = 0;
  return local.rope_tables();
}

ModelConfig::RopeTables ModelConfig::rope_tables() const {
  const int half = head_size() / 2;
  const std::vector<double> frequencies = rope_inverse_frequencies();
  RopeTables tables;
  tables.cos.resize(static_cast<size_t>(max_seq_len) * half);
  tables.sin.resize(tables.cos.size());
  for (int pos = 0; pos < max_seq_len; ++pos) {
    for (int i = 0; i < half; ++i) {
      const double angle = pos * frequencies[static_cast<size_t>(i)];
      tables.cos[static_cast<size_t>(pos) * half + i] = static_cast<float>(std::cos(angle));
      tables.sin[static_cast<size_t>(pos) * half + i] = static_cast<float>(std::sin(angle));
    }
  }
  return tables;
}

std::vector<double> ModelConfig::rope_inverse_frequencies() const {
  const int half = head_size() / 2;
  std::vector<double> out(static_cast<size_t>(half));
  for (int i = 0; i < half; ++i) out[static_cast<size_t>(i)] = std::pow(static_cast<double>(rope_theta), -2.0 * i / head_size());
  if (rope_linear_factor != 0) {
    for (double& frequency : out) frequency /= rope_linear_factor;
  }
  if (!rope_scaling.enabled()) return out;
  // Llama 3 (Meta's reference, and transformers' _compute_llama3_parameters).
  const RopeScaling& s = rope_scaling;
  const double low_freq_wavelen = s.original_max_seq_len / static_cast<double>(s.low_freq_factor);
  const double high_freq_wavelen = s.original_max_seq_len / static_cast<double>(s.high_freq_factor);
  for (double& frequency : out) {
    const double wavelen = 2 * M_PI / frequency;
    if (wavelen < high_freq_wavelen) continue;
    if (wavelen > low_freq_wavelen) {
      frequency /= s.factor;
      continue;
    }
    const double smooth = (s.original_max_seq_len / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
    frequency = (1 - smooth) * frequency / s.factor + smooth * frequency;
  }
  return out;
}

std::string ModelConfig::describe_llama_shape() const {
  // (Unscaled models describe themselves as before: the description is part of a model's fingerprint.)
  const std::string scaling =
      rope_scaling.enabled() ? fmt::format(" (llama3 scaling: factor {}, low {}, high {}, original context {})", rope_scaling.factor,
                                           rope_scaling.low_freq_factor, rope_scaling.high_freq_factor,
                                           rope_scaling.original_max_seq_len)
                             : "";
  return fmt::format(
      "dim {}, hidden {}, layers {}, heads {} (kv {}, head size {}{}{}), vocab {}, context {}, rope theta {}{}, norm eps {}, {} "
      "classifier",
      dim, hidden_dim, n_layers, n_heads, n_kv_heads, head_size(), qk_norm ? ", q/k norm" : "", qkv_bias ? ", q/k/v bias" : "", vocab_size, max_seq_len, rope_theta,
      scaling, norm_eps,
      shared_classifier ? "tied" : "separate");
}

std::string ModelConfig::describe() const {
  // Gemma's variations are appended only when present: older models' descriptions are unchanged.
  std::string out = describe_llama_shape();  // names q/k norms and q/k/v biases
  const std::vector<std::pair<bool, const char*>> features = named_features();
  for (const auto& [on, name] : std::span(features).subspan(2)) {
    if (on) out += fmt::format(", {}", name);
  }
  if (query_scale_dim != 0) out += fmt::format(", attention scale 1/sqrt({})", query_scale_dim);
  if (rope_linear_factor != 0) out += fmt::format(", linear rope scaling {}", rope_linear_factor);
  if (!local_layers.empty()) {
    int local = 0;
    for (uint8_t l : local_layers) local += l;
    out += fmt::format(", {} of {} layers local (window {}, rope theta {})", local, n_layers, sliding_window, rope_local_theta);
  }
  return out;
}

}  // namespace fedcal
