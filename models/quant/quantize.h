// Static W8A8 quantization of a model: calibration statistics + a scale method -> the INT8 layers.
#pragma once

#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <vector>

#include "models/format/model.h"
#include "models/format/model_package.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/int4_format.h"
#include "models/quant/linear_int8.h"
#include "models/quant/scales.h"

namespace fedcal {

struct QuantizeOptions {
  ScaleMethodSpec method;
  bool per_channel = false;         // weights: one scale per output channel (else per tensor)
  bool per_group = false;           // weights: one per 32 input channels of each row (dynamic activations only)
  bool asymmetric = false;          // activations: zero point (else symmetric)
  std::set<std::string> keep_fp32;  // linear names ("layers.3.w2", "classifier") or "layers.3" for a whole layer
  // Linears (named alike) in the fine-grained mode: weights in groups of 32, activations per block of
  // 32 at run time (no static scales), next to the static layers of the same package.
  std::set<std::string> fine_grained;
  // 4-bit weights (quant/int4_format.h; run as the fine-grained mode): `weight_bits` 4 puts every linear
  // not kept in FP32 or named fine-grained in 4 bits where its input width is a multiple of 32 (the
  // others stay fine-grained INT8: four_bit_skipped), `four_bit` names linears (or whole layers) for 4
  // bits, refused by name where the width does not allow it.
  // `weight_bits` 5 and `five_bit` do the same with 5-bit weights (quant/int5_format.h): the step
  // between 4 bits and fine-grained INT8; `five_bit` wins over `four_bit` for a linear both list, and
  // `fine_grained` over `five_bit` (the 5-bit search's last step moves 5-bit layers on to INT8).
  int weight_bits = 8;
  std::set<std::string> four_bit;
  std::set<std::string> five_bit;
  Int4Grid four_bit_grid = Int4Grid::kNonUniform;          // the levels of the 4- and 5-bit layers
  Int4Rounding four_bit_rounding = Int4Rounding::kSearch;  // how their groups' scales are chosen
  // Per linear, the mean square of each input channel's activation (linear_importance): the weights of
  // the 4-bit rounding error. A linear not listed is rounded plainly.
  std::map<std::string, std::vector<double>> importance;
  // Scale methods for single quantization points (by index), instead of `method` (clip_search).
  std::map<int, ScaleMethodSpec> point_methods;
  // The share of each point's values taken off the top before any method runs (activation_params):
  // a round's trim_agents k as k x (one participant's most tokens) / (the round's tokens).
  double trim_share = 0;
  // Statistics of groups of the same fleet (a round's relay groups; each fits the model as the
  // aggregate does): when given, each point's parameters are the median of the groups'
  // (median_activation_params), not the aggregate's, and trim_share must be 0. Not owned.
  std::vector<const CalibrationStats*> scale_groups;
};

// The linear layers of a model, each with its input and output quantization points (their widths,
// point_width, are the layer's in and out features).
struct LinearSite {
  std::string name;  // "layers.3.wq", ..., "classifier"
  int input_point;
  int output_point;
};
std::vector<LinearSite> linear_sites(const ModelConfig& config);

// Quantizes every linear not kept in FP32. Throws Error if the statistics do not fit the model or a
// point has no usable values; the message names the point.
QuantizedLinears quantize_model(const Model& model, const CalibrationStats& stats, const QuantizeOptions& options);

// The INT8 weights alone (activation parameters left at their defaults): what dynamic activations
// need, no statistics. `options.method` and `asymmetric` are not used.
QuantizedLinears quantize_model_weights(const Model& model, const QuantizeOptions& options);

// What a package says of its 4-bit layers (PackageProvenance::method).
std::string four_bit_method(const QuantizeOptions& options);

// The linears that `options.weight_bits` 4 leaves in fine-grained INT8 because their input width is
// not a multiple of 32 (for the quantize report).
std::vector<std::string> four_bit_skipped(const ModelConfig& config, const QuantizeOptions& options);

// What a package records about INT8 layers quantized from `stats` with `options` (one definition, so
// a package built by `fedcal-model quantize` and one built by a federated round agree byte for byte).
PackageProvenance quantization_provenance(const QuantizeOptions& options, const CalibrationStats& stats);

// The FP32 weights of a linear by name.
const std::vector<float>& linear_weights(const Model& model, const std::string& name);

class XnnRuntime;

class Transformer;

// The mean KL divergence from FP32, per token, of candidate models run on windows of text (each from
// position 0); the FP32 log-probabilities are computed once.
class WindowKl {
 public:
  // The first `max_windows` windows of the context length in `tokens`.
  WindowKl(const Model& model, const std::vector<int>& tokens, const XnnRuntime& runtime, size_t max_windows = 1);
  // These windows (each at most the context length; those of fewer than 2 tokens are left out).
  WindowKl(const Model& model, std::vector<std::vector<int>> windows, const XnnRuntime& runtime);
  double of(Transformer& candidate) const;
  int64_t tokens() const;  // scored per candidate

 private:
  std::vector<double> log_softmax(std::span<const float> logits, size_t rows) const;

  ModelConfig config_;
  std::vector<std::vector<int>> windows_;
  std::vector<std::vector<double>> references_;
};

struct LayerSensitivity {
  std::string name;  // linear layer
  double mean_kl;    // KL(FP32 || model with only this layer in INT8), nats per token
};

// Measures each linear layer's sensitivity: the mean KL divergence from FP32 of the model in which only
// that layer runs in INT8, on `tokens` (one window of at most the context length). Sorted worst first.
std::vector<LayerSensitivity> measure_sensitivity(const Model& model, const CalibrationStats& stats,
                                                  const QuantizeOptions& options, const std::vector<int>& tokens,
                                                  const XnnRuntime& runtime);

// Mixed precision to a target: the linear layers taken out of static INT8, most sensitive first (ranked
// on the first window), until the mean KL from FP32 on `tokens` (its first 4 context windows) is at
// most `target_kl`. They go to FP32, or to the fine-grained INT8 mode (about a quarter of FP32's bytes),
// or from 4 bits to 5 bits (quant/int5_format.h), and where that is not enough on to fine-grained INT8.
enum class LayerFallback { kFp32, kFineGrained, kFiveBit };
struct MixedPrecision {
  std::vector<std::string> layers;  // in the order they were added (sensitivity ranking)
  // With the 5-bit fallback, where every layer in 5 bits is not enough: those then fine-grained INT8.
  std::vector<std::string> fine_grained_layers;
  double mean_kl = 0;               // of the chosen model
  std::vector<double> tried;        // the KL with 0, 1, 2, ... of them taken out
};
// The fewest layers in the sensitivity ranking's order (measure_sensitivity) that reach the target;
// on top of options.keep_fp32 / fine_grained. Throws Error if even every linear taken out does not reach it.
MixedPrecision fewest_fallback_layers(const Model& model, const CalibrationStats& stats, const QuantizeOptions& options,
                                      const std::vector<int>& tokens, const XnnRuntime& runtime, double target_kl,
                                      LayerFallback fallback = LayerFallback::kFp32);

// "fp32" / "fine-grained", and the set of `options` a fallback adds its layers to.
LayerFallback parse_fallback(const std::string& name);  // throws Error naming it
const char* fallback_name(LayerFallback fallback);      // where its layers go: "in FP32", "fine-grained", "in 5 bits"
std::set<std::string>& fallback_layers(QuantizeOptions& options, LayerFallback fallback);

// The mean KL from FP32 on `tokens` (the same 4 windows as fewest_fallback_layers) of the
// calibration-free baseline: the weights of `options` (per channel or per tensor), activations
// quantized per token at run time.
double dynamic_baseline_kl(const Model& model, const QuantizeOptions& options, const std::vector<int>& tokens,
                           const XnnRuntime& runtime);
// The same on the windows of `kl`.
double dynamic_baseline_kl(const Model& model, const QuantizeOptions& options, const WindowKl& kl, const XnnRuntime& runtime);

// A mixed-precision target: a mean KL in nats per token, or "dynamic": the dynamic baseline's KL on the
// same windows, i.e. a static model at least as faithful as one that needs no calibration there.
// "dynamic*F" asks for F times it: a margin, since a target met on the sensitivity text is met on
// other text only about as well (measured on the project's model: "dynamic" gave 1.05x the baseline
// on held-out text, docs/QUANTIZATION.md).
struct KlTarget {
  std::optional<double> kl;  // none: the dynamic baseline's, times `factor`
  double factor = 1;
  static KlTarget parse(const std::string& text);  // "0.001", "dynamic" or "dynamic*0.8"; throws Error naming it
  std::string to_string() const;
};

// fewest_fallback_layers to `target`, its layers added to `options` (fallback_layers). "dynamic" is
// measured on `baseline` (nullptr: `model`): for a smoothed model, the original it was smoothed from.
// Both compute the same FP32 function, but their dynamic INT8 differs (smoothing changes the ranges
// per-token scales see), and the baseline a user compares with is what they get without calibrating:
// the original's.
struct MixedPrecisionChoice {
  MixedPrecision mixed;
  double target_kl = 0;  // the number reached (for "dynamic": the baseline's KL on the window)
};
MixedPrecisionChoice choose_mixed_precision(const Model& model, const CalibrationStats& stats, QuantizeOptions& options,
                                            const std::vector<int>& tokens, const XnnRuntime& runtime, const KlTarget& target,
                                            LayerFallback fallback, const Model* baseline = nullptr);

// Per-point clipping by measured error: for each quantization point in the model's order, each
// candidate method is tried at that point alone (the others as chosen so far), and the one giving the
// smallest mean KL from FP32 on `tokens` (one window) is kept. Starts from options.method everywhere;
// returns the points whose method changed, with the KL before and after.
struct ClippingChoice {
  std::map<int, ScaleMethodSpec> point_methods;  // the points that differ from options.method
  double kl_before = 0, kl_after = 0;
};
ClippingChoice choose_clipping(const Model& model, const CalibrationStats& stats, const QuantizeOptions& options,
                               const std::vector<int>& tokens, const XnnRuntime& runtime, const std::vector<ScaleMethodSpec>& candidates);

}  // namespace fedcal
