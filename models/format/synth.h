// Random-weight models of known shapes, for tests and benchmarks.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/format/model.h"

namespace fedcal {

struct SynthPreset {
  std::string name;
  std::string description;
  ModelConfig config;
};

const std::vector<SynthPreset>& synth_presets();
const SynthPreset& find_synth_preset(const std::string& name);  // throws Error listing the presets

// Weights ~ N(0, 1/fan_in) so activations stay O(1) through depth; norm weights ~ 1 + N(0, 0.1^2).
// Deterministic for a given (config, seed) on every platform.
Model synthesize_model(const ModelConfig& config, uint64_t seed);

}  // namespace fedcal
