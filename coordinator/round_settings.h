// What an operator asks of a calibration round (`fedcal-coordinator round start ...`), stored with
// the round as JSON.
#pragma once

#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "models/quant/scales.h"

namespace fedcal::coordinator {

// The label of a round's package for devices without an INT8 dot product (RoundSettings::device_classes).
inline constexpr const char* kStaticClassLabel = "class:static";

// The fewest relay groups whose median of scales a round takes (group_scales "median"): with 3, one
// group's falsified statistics are outvoted by the two others.
inline constexpr size_t kMedianScaleMinGroups = 3;

struct RoundSettings {
  int64_t model_id = 0;          // the FP32 model to calibrate
  int min_agents = 3;            // fewer joined agents: the round fails; the aggregate of fewer is never unmasked
  int max_agents = 0;            // 0: every online agent may join
  int sequences_per_agent = 64;  // calibration sequences (lines) per agent, at most
  int seq_len = 128;             // tokens per sequence, at most
  // The runtime the package is for (models/quant/recipe.h) and the recipe that fills every recipe field
  // (method, per_channel, smooth, target_kl, fallback) the settings do not name: "recommended" (the
  // recipe measured best for the runtime; what `round start` sends) or "plain" (these defaults, what a
  // settings object without "recipe" gets). recipe_notes says what the recipe chose and what it could not.
  std::string runtime = "engine";
  std::string recipe = "plain";
  std::vector<std::string> recipe_notes;
  std::string method = "percentile:99.99";
  bool per_channel = false;
  bool asymmetric = false;
  std::vector<std::string> keep_fp32;
  // Linears (or whole layers) in the fine-grained mode: weights in groups of 32, activations per block
  // of 32 at run time (qgint8), next to the static layers; e.g. the layers `fedcal-model quantize
  // --target-kl T --fallback fine-grained` picks.
  std::vector<std::string> fine_grained;
  // Outlier migration (SmoothQuant) from the fleet's statistics, in two rounds: in this one the agents
  // record importance sums; its job folds the smoothing into the FP32 model (alpha per site by the
  // static INT8 error measured on the coordinator's reference text; with weight_bits 4, AWQ's
  // input-channel scaling by the 4-bit error) and stores the smoothed FP32 model, and the coordinator
  // then starts a follow-up round on it with these settings (smooth off, smoothing_round set), whose
  // package is the result. Needs the coordinator's reference_text.
  bool smooth = false;
  int64_t smoothing_round = 0;  // a follow-up's: the round whose importance sums smoothed its model
  // Mixed precision to a target, searched by the job on the coordinator's reference text (one window):
  // the fewest linears out of static INT8, most sensitive first, that bring the KL vs FP32 to
  // target_kl - nats per token, or "dynamic" (the calibration-free baseline's KL; KlTarget). "": none.
  std::string target_kl;
  std::string fallback = "fp32";  // where target_kl moves layers: "fp32" or "fine-grained"
  // 4: every linear not kept in FP32 or named fine-grained in 4-bit weights (models/quant/int4_format.h)
  // on `int4_grid` ("non-uniform" or "uniform"), each group rounded to the least error weighted by the
  // fleet's importance sums, which the agents then record (not with dp_epsilon: plain rounding). The
  // engine runs them; target_kl with fallback fine-grained moves layers from 4 bits to INT8 groups.
  int weight_bits = 8;
  std::string int4_grid = "non-uniform";
  int mantissa_bits = 5;  // histogram resolution
  // The histogram's top: magnitudes at or above 2^max_exponent (and non-finite values) count there.
  int max_exponent = 12;
  // Bounds any k participants' influence on the activation scales: the most values k of them could
  // have contributed (k x sequences_per_agent x seq_len tokens' worth) are taken off the top of each
  // point's histogram before the scale method runs, so no clip rests on mass fewer than k + 1
  // participants sent. 0: off. It costs fidelity on honest rounds unless the fleet is large
  // (docs/ARCHITECTURE.md, "Falsified statistics"); the round fails if it would trim half.
  int trim_agents = 0;
  // The coordinator's check before publishing (plausibility_check.h): a package whose KL from FP32 on
  // the check text is above max_kl_ratio x max(its recipe calibrated on that text, the dynamic
  // baseline) fails the round. 0: no check.
  double max_kl_ratio = 4;
  double dp_epsilon = 0;  // > 0: distributed differential privacy (Skellam noise) with (epsilon, dp_delta)
  double dp_delta = 1e-5;
  int neighbours = 0;  // secure-aggregation graph degree; 0: automatic (complete up to 33 agents)
  int threshold = 0;   // Shamir threshold; 0: a majority of each agent's share holders
  int lane_bits = 0;   // bits per masked value; 0: 32 when every sum fits below 2^31, else 64
  // > 0: secure aggregation per group at the relays (secagg/group_unmasking.h), groups of at most this
  // many of one relay's participants and at least min_agents (so each group's sum is of min_agents
  // agents or more, as a round's is). Every participant must be behind a relay. 0: one secure
  // aggregation between every participant and the coordinator.
  int relay_group_size = 0;
  // With relay groups, how the activation scales come from the groups' opened sums: "sum" (the
  // aggregate's, as without groups) or "median" (each point's clips the median of the groups'
  // clips, models/quant/scales.h: one group's falsified statistics move no scale beyond the honest
  // groups' range while most groups are honest; needs 3 or more opened groups, no trim_agents). The
  // aggregate is still the sum, and everything else (importance, smoothing, exports) is made from it.
  std::string group_scales = "sum";
  bool median_group_scales() const { return group_scales == "median"; }
  Int4Grid four_bit_grid() const { return int4_grid == "uniform" ? Int4Grid::kUniform : Int4Grid::kNonUniform; }
  // Per device group (agent label): a differently quantized package from the same aggregate, e.g.
  // per-tensor weights and the classifier in FP32 for boards with less RAM. Agents with the label
  // check and get that package instead of the default one.
  struct GroupVariant {
    bool per_channel = false;
    std::vector<std::string> keep_fp32;
  };
  std::map<std::string, GroupVariant> group_variants;
  // Where the fleet package has fine-grained layers and some participant's CPU has no INT8 dot product
  // (store.h, has_int8_dot_product), the round also builds a static package for those devices (the
  // fine-grained layers in FP32), which they check and rollouts of the fleet package hand them.
  bool device_classes = true;
  // Files for other runtimes the round writes beside its package (kRuntimeExportFormats,
  // models/format/runtime_export.h: gguf is written as Q8_0). "imatrix" or "imatrix-gguf" makes
  // every agent also record importance sums (models/quant/importance.h).
  std::vector<std::string> exports;
  bool importance() const;  // smooth, an imatrix export, or 4-bit weights without dp_epsilon

  nlohmann::json to_json() const;
  // Validates every field; errors name it. With recipe "recommended", the fields `json` does not name
  // take the runtime's recipe; smoothing and a KL target need the coordinator's reference text
  // (`has_reference_text`), without it they stay off and recipe_notes says so.
  static RoundSettings from_json(const nlohmann::json& json, bool has_reference_text = true);
};

}  // namespace fedcal::coordinator
