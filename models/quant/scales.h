// INT8 scales: activation scales computed from merged calibration histograms by one of four methods,
// and weight quantization per tensor or per output channel. One INT8 convention everywhere:
//   real = scale * (q - zero_point),  q in [-128, 127] (activations), [-127, 127] (weights, zero point 0).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "models/format/float16.h"
#include "models/quant/activation_histogram.h"

namespace fedcal {

enum class ScaleMethod { kMinMax, kPercentile, kEntropy, kMse };

struct ScaleMethodSpec {
  ScaleMethod method = ScaleMethod::kPercentile;
  double percentile = 99.99;  // for kPercentile

  // "minmax", "percentile:99.99", "entropy", "mse"; throws Error on anything else.
  static ScaleMethodSpec parse(const std::string& text);
  std::string to_string() const;
};

struct QuantParams {
  float scale = 1.0f;
  int32_t zero_point = 0;
  bool operator==(const QuantParams&) const = default;
};

// Activation quantization parameters of one point from its counts (layout.counts_per_point()).
// Symmetric: clip c from the |x| histogram of both signs, scale = c / 127, zero point 0.
// Asymmetric: a clip per sign from that sign's histogram, scale = (c+ + c-) / 255.
// `trim_share` (0 to < 0.5) bounds what few participants' values can do to the clip: with that
// share of the point's values taken off the top of each histogram, the clip is at most
// kTrimHeadroom x the largest value left (a round's trim_agents: k participants' most tokens over
// the round's tokens). Mass that fewer than k + 1 participants could have sent stretches no clip
// further than that.
// Throws Error if the point saw no values or only non-finite ones.
inline constexpr double kTrimHeadroom = 2.0;
QuantParams activation_params(const HistogramLayout& layout, std::span<const uint64_t> counts, const ScaleMethodSpec& method,
                              bool asymmetric, double trim_share = 0);
// The same from several groups' counts of the point (a round's relay groups): each clip the median of
// the groups' clips (the lower middle one for an even count), so a group whose statistics are falsified
// moves no clip beyond the honest groups' range while most groups are honest. No trim.
QuantParams median_activation_params(const HistogramLayout& layout, std::span<const std::span<const uint64_t>> groups,
                                     const ScaleMethodSpec& method, bool asymmetric);

// The clipping magnitude `method` picks for a histogram of magnitudes: counts[0] underflow (and zeros),
// counts[1..buckets] the buckets, counts[buckets + 1] overflow. Exposed for tests.
double clip_magnitude(const HistogramLayout& layout, std::span<const double> magnitude_counts, const ScaleMethodSpec& method);

// Symmetric INT8 weights of a (rows, cols) matrix: one scale per tensor, or one per row (output channel).
// How the rows of a QuantizedMatrix share scales: the package's QINT8, QCINT8 and QGINT8 tensor types.
// kPerGroup: one scale per kWeightGroup input channels of each row (llama.cpp Q8_0's weight blocks),
// each a binary16 value (held as float), run only with activations quantized at run time
// (LinearDynamicInt8): no XNNPACK operator takes it.
enum class WeightGranularity { kPerTensor, kPerChannel, kPerGroup };
// The 16 levels 4-bit weights take (quant/int4_format.h): Q4_0's uniform ones, or non-uniform ones;
// and the 32 of 5-bit weights (quant/int5_format.h): Q5_0's, or non-uniform ones.
enum class Int4Grid : uint8_t { kUniform, kNonUniform };
inline constexpr int kWeightGroup = 32;

struct QuantizedMatrix {
  int rows = 0, cols = 0;
  WeightGranularity granularity = WeightGranularity::kPerTensor;
  std::vector<int8_t> values;  // (rows, cols), in [-127, 127]; empty with bits 4
  std::vector<float> scales;   // 1 (per tensor) or rows (per channel); empty per group
  // Per group: (rows, groups()) binary16 scales, as packages store them and the kernels read them (a
  // float each would double them: 138 MB for a 1.1B-parameter 4-bit model while it loads).
  std::vector<uint16_t> group_scales;
  // 8, or 4 (per group only, cols a multiple of 32, scales of either sign): then `codes` holds the
  // weights as stored, two 4-bit codes of the grid's levels per byte (quant/int4_format.h), and
  // `values` nothing: a 4-bit matrix is never unpacked to a byte per weight. Or 5 (per group, cols a
  // multiple of 32, scales of either sign): `values` holds the levels of the grid's 32
  // (quant/int5_format.h), packed to 5 bits only in a package.
  int bits = 8;
  Int4Grid grid = Int4Grid::kUniform;
  std::vector<uint8_t> codes;  // (rows, cols / 2) with bits 4, else empty

  bool per_channel() const { return granularity == WeightGranularity::kPerChannel; }
  bool per_group() const { return granularity == WeightGranularity::kPerGroup; }
  int groups() const { return (cols + kWeightGroup - 1) / kWeightGroup; }  // the last may be shorter
  // The scale of a whole row: per tensor or per channel only (a grouped matrix has none).
  float row_scale(int row) const { return per_channel() ? scales[static_cast<size_t>(row)] : scales[0]; }
  // The scale of the weight at (row, col), whatever the granularity.
  float scale_at(int row, int col) const {
    return per_group() ? f16_to_f32(group_scales[static_cast<size_t>(row) * groups() + static_cast<size_t>(col / kWeightGroup)])
                       : row_scale(row);
  }
  // Throws Error unless the values (or codes) and scales fit (rows, cols) and the granularity, and every
  // scale is positive and finite (nonzero with 4 or 5 bits); `what` names the matrix.
  void check(const std::string& what) const;
};
QuantizedMatrix quantize_weights(std::span<const float> weights, int rows, int cols, WeightGranularity granularity);
inline QuantizedMatrix quantize_weights(std::span<const float> weights, int rows, int cols, bool per_channel) {
  return quantize_weights(weights, rows, cols, per_channel ? WeightGranularity::kPerChannel : WeightGranularity::kPerTensor);
}

// Round-to-nearest-even INT8 quantization of one value with clamping (the reference for conversions).
int8_t quantize_value(float value, const QuantParams& params);

}  // namespace fedcal
