// The coordinator's own check of a package before a round publishes it: its KL from FP32 on text the
// coordinator holds, against the same recipe calibrated on that text and against the calibration-free
// baseline (per-token activations). Secure aggregation hides who contributed what, so statistics one
// participant falsified (a point's whole count in its top bucket, say) are only visible in what they
// do to the model: a package far worse than both is never published, and the round fails with the
// figures.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/format/model.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/quantize.h"
#include "models/tokenizer/tokenizer.h"

namespace fedcal::coordinator {

// What the check measures on: the coordinator's reference text where it has one (its first lines
// calibrate the comparison recipe, its last ones are scored), else text the FP32 model samples itself
// with fixed seeds (the same documents both calibrate and are scored). Each document is <s> + tokens,
// at most `seq_len`.
struct CheckText {
  std::string source;
  std::vector<std::vector<int>> calibration;
  std::vector<std::vector<int>> evaluation;
};
CheckText make_check_text(const Model& model, const Tokenizer& tokenizer, const std::string& reference_text_path, int seq_len,
                          const XnnRuntime& runtime);

struct PlausibilityCheck {
  std::string label;          // "fleet", "group:<label>"
  std::string text;           // CheckText::source
  int64_t tokens = 0;         // scored
  double kl = 0;              // the package's, nats per token
  double same_recipe_kl = 0;  // its options, calibrated on the check text
  double dynamic_kl = 0;      // its weights, activations quantized per token at run time
  double max_ratio = 0;
  double bound = 0;  // max_ratio x max(same_recipe_kl, dynamic_kl)
  // Points with values at or above the histogram's top (2^max_exponent, or not finite): counted there.
  std::map<std::string, uint64_t> overflow;
  int max_exponent = 0;

  bool passed() const { return kl <= bound; }  // (false for a NaN KL)
  std::string failure() const;                 // why it did not pass, with the figures
  nlohmann::json to_json() const;
};

// Measures `int8` (quantized from `stats` with `options`) against FP32 on `text`.
PlausibilityCheck check_plausible(const std::string& label, const Model& model, const QuantizedLinears& int8,
                                  const QuantizeOptions& options, const CalibrationStats& stats, const CheckText& text,
                                  const XnnRuntime& runtime, double max_ratio);

}  // namespace fedcal::coordinator
