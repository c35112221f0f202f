#include "models/quant/quantization_points.h"

#include <algorithm>

#include "common/error.h"

namespace fedcal {

std::vector<std::string> quantization_point_names(const ModelConfig& config) {
  static constexpr const char* kLayerPointNames[kPointsPerLayer] = {
      "attn_in", "q_out", "k_out", "v_out", "attn_out", "wo_out", "ffn_in", "w1_out", "w3_out", "ffn_hidden", "w2_out"};
  std::vector<std::string> names;
  for (int l = 0; l < config.n_layers; ++l) {
    for (const char* name : kLayerPointNames) names.push_back("layers." + std::to_string(l) + "." + name);
  }
  names.push_back("final_in");
  names.push_back("logits");
  return names;
}

int point_width(const ModelConfig& config, int point) {
  if (point < 0 || point >= point_count(config))
    fail("quantization point {} out of range (0..{})", point, point_count(config) - 1);
  if (point == final_in_point(config)) return config.dim;
  if (point == logits_point(config)) return config.vocab_size;
  switch (static_cast<LayerPoint>(point % kPointsPerLayer)) {
    case LayerPoint::kKOut:
    case LayerPoint::kVOut:
      return config.kv_dim();
    case LayerPoint::kQOut:
    case LayerPoint::kAttnOut:
      return config.q_dim();
    case LayerPoint::kW1Out:
    case LayerPoint::kW3Out:
    case LayerPoint::kFfnHidden:
      return config.hidden_dim;
    case LayerPoint::kAttnIn:
    case LayerPoint::kWoOut:
    case LayerPoint::kFfnIn:
    case LayerPoint::kW2Out:
      return config.dim;
  }
  fail("quantization point {}: unknown kind", point);
}

int widest_point(const ModelConfig& config) {
  int widest = 0;
  for (int p = 0; p < point_count(config); ++p) widest = std::max(widest, point_width(config, p));
  return widest;
}

double squared_widths(const ModelConfig& config) {
  double sum = 0;
  for (int p = 0; p < point_count(config); ++p) sum += static_cast<double>(point_width(config, p)) * point_width(config, p);
  return sum;
}

}  // namespace fedcal
