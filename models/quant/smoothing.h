// Outlier migration (SmoothQuant, Xiao et al. 2023) folded into the FP32 model before static INT8.
//
// A linear's input channel j with large activations makes a per-tensor activation scale coarse for
// every other channel. Dividing the activation's channel j by s_j and multiplying column j of every
// linear that reads it by s_j leaves the FP32 function unchanged while moving range from the
// activations to the weights (which have per-channel scales). With s_j = a_j^alpha / w_j^(1 - alpha)
// (a_j: the channel's activation magnitude, w_j: the largest |W[:, j]| over the linears reading it),
// alpha sets how much moves.
//
// Each division folds into what produces the activation, so the quantized graph gains no operation:
//   attn_in    (wq, wk, wv)  the attention RMSNorm's weights
//   attn_out   (wo)          the rows of wv (and bv): attention is linear in V. Query heads that share
//                            a KV head share its factors (the largest a_j and w_j among them).
//   ffn_in     (w1, w3)      the FFN RMSNorm's weights
//   ffn_hidden (w2)          the rows of w3 (silu(w1 x) * (w3 x) is linear in w3 x)
//
// a_j comes from the importance sums (importance.h): sqrt(sum x^2 / tokens), the root mean square of
// the channel, an additive summary that a fleet round aggregates securely (a per-channel maximum is not
// additive). alpha is chosen per site by measured error: each candidate's static INT8 output error on
// a window of text (smooth_model).
//
// For 4-bit weights (SmoothingOptions::weight_bits 4) the same folding is AWQ's input-channel scaling
// (Lin et al. 2024): the weights' columns of busy channels are scaled up before rounding, so their
// share of each group's levels grows. There s_j = a_j^alpha (normalised: the largest times the
// smallest factor is 1; the weights' magnitudes play no part), and the error measured is that of
// 4-bit weights (importance-weighted rounding, with the mean squares the scaled channels have,
// a_j^2 / s_j^2) on activations quantized per block of 32, as the engine runs such a layer.
#pragma once

#include <nlohmann/json_fwd.hpp>

#include <optional>
#include <string>
#include <vector>

#include "models/format/model.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/scales.h"

namespace fedcal {

class XnnRuntime;

enum class SmoothingSite { kAttnIn, kAttnOut, kFfnIn, kFfnHidden };
std::string smoothing_site_name(int layer, SmoothingSite site);  // "layers.3.attn_in"

// The root mean square of each activation channel of the site, from `stats`' importance sums. Throws
// Error if the statistics hold none.
std::vector<float> channel_rms(const CalibrationStats& stats, const ModelConfig& config, int layer, SmoothingSite site);

// The factors s_j = a_j^alpha / w_j^(1 - alpha) of the site, for the activation magnitudes
// `activation` (one per channel of the site); 1 where a_j or w_j is 0. For attn_out, one factor per
// KV channel (n_kv_heads * head_size).
std::vector<float> smoothing_factors(const Model& model, int layer, SmoothingSite site, const std::vector<float>& activation, double alpha);
// AWQ's factors for 4-bit weights: s_j = a_j^alpha, normalised (see above); one per KV channel for
// attn_out, as smoothing_factors.
std::vector<float> awq_factors(const ModelConfig& config, int layer, SmoothingSite site, const std::vector<float>& activation,
                               double alpha);

// Folds factors (as smoothing_factors returns them) into the model: the FP32 function is unchanged to
// float rounding.
void fold_smoothing(Model& model, int layer, SmoothingSite site, const std::vector<float>& factors);

struct SiteSmoothing {
  int layer = 0;
  SmoothingSite site = SmoothingSite::kAttnIn;
  std::optional<double> alpha;  // none: the site is left as it is
  double error_without = 0;     // relative squared output error of static INT8, without smoothing
  double error_with = 0;        // with the chosen alpha (= error_without when none)
};

struct SmoothingOptions {
  std::vector<double> alphas = {0.25, 0.5, 0.75};  // the candidates at each site (none is always one)
  bool per_channel_weights = true;                 // the weight granularity the error is measured with
  // 8: SmoothQuant for static INT8; 4: AWQ for 4-bit weights on `grid` (see above).
  int weight_bits = 8;
  Int4Grid grid = Int4Grid::kNonUniform;
  size_t windows = 1;  // context windows of the text whose activations the error is measured on
};

// For every site of every layer: the candidate (no smoothing, or one of the alphas) with the smallest
// error of the site's linears on the activations of `tokens` (the first options.windows windows; FP32
// outputs against, for INT8, per-channel INT8 weights times per-tensor INT8 activations at the best of
// a few clipping ranges; for 4 bits, as described above), folded into `model`. `stats` must hold
// importance sums recorded on `model`.
std::vector<SiteSmoothing> smooth_model(Model& model, const CalibrationStats& stats, const std::vector<int>& tokens,
                                        const XnnRuntime& runtime, const SmoothingOptions& options = {});

// The choices as reports show them: one object per site with "site" (its name), "alpha" (null: left as
// it was), "error_without" and "error_with".
nlohmann::json smoothing_sites_json(const std::vector<SiteSmoothing>& sites);

}  // namespace fedcal
