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

#include "models/model_config.h"

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

// Receives activations at quantization points during an FP32 forward pass.
class ActivationObserver {
 public:
  virtual ~ActivationObserver() = default;
  // `values` holds rows (tokens) x width of the point's tensor.
  virtual void observe(int point, std::span<const float> values) = 0;
};

}  // namespace fedcal
