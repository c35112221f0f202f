#include "models/quantization_points.h"

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

}  // namespace fedcal
