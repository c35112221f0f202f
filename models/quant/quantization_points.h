// The quantization points of a model: every tensor whose INT8 scale the W8A8 graph needs, in a fixed
// order that calibration statistics, scales and packages all index by.
//
// Per layer: the input of each linear layer (attn_in feeds wq/wk/wv, attn_out feeds wo, ffn_in feeds
// w1/w3, ffn_hidden feeds w2) and the output of each (XNNPACK's qs8 fully connected operator writes
// INT8 at a fixed output scale). After the layers: final_in (classifier input) and logits.
#pragma once

#include <span>
#include <string>
#include <vector>

#include "models/format/model_config.h"

namespace fedcal {

enum class LayerPoint {
  kAttnIn,
  kQOut,
  kKOut,
  kVOut,
  kAttnOut,
  kWoOut,
  kFfnIn,
  kW1Out,
  kW3Out,
  kFfnHidden,
  kW2Out,
};
inline constexpr int kPointsPerLayer = 11;

inline int layer_point(int layer, LayerPoint point) { return layer * kPointsPerLayer + static_cast<int>(point); }
inline int final_in_point(const ModelConfig& config) { return config.n_layers * kPointsPerLayer; }
inline int logits_point(const ModelConfig& config) { return config.n_layers * kPointsPerLayer + 1; }
inline int point_count(const ModelConfig& config) { return config.n_layers * kPointsPerLayer + 2; }

// "layers.3.attn_in", ..., "final_in", "logits"
std::vector<std::string> quantization_point_names(const ModelConfig& config);

// Values per token at `point` (dim, kv_dim, hidden_dim or vocab_size): the one definition of the
// points' widths, from which the statistics' size, the DP sensitivity and the bit-width budget follow.
int point_width(const ModelConfig& config, int point);
// The widest point (the most counts one token adds to any histogram).
int widest_point(const ModelConfig& config);
// Sum over every point of width^2: one token adds at most width_p counts at point p, so the squared
// L2 norm of one token's contribution to the statistics vector is at most this.
double squared_widths(const ModelConfig& config);

// Receives activations at quantization points during an FP32 forward pass.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // `values` holds rows (tokens) x width of the point's tensor.
  virtual void observe(int point, std::span<const float> values) = 0;
};

}  // namespace fedcal
