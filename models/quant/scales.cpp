#include "models/quant/scales.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "common/error.h"
#include "models/format/float16.h"

namespace fedcal {
namespace {

// Representative magnitude of each histogram slot: 0 for underflow, the bucket midpoint, the
// overflow floor for overflow.
double slot_value(const HistogramLayout& layout, int slot) {
  const int buckets = layout.buckets();
  if (slot == 0) return 0.0;
  if (slot == buckets + 1) return std::ldexp(1.0, layout.max_exponent);
  return 0.5 * (layout.bucket_low(slot - 1) + layout.bucket_high(slot - 1));
}

double slot_high(const HistogramLayout& layout, int slot) {
  const int buckets = layout.buckets();
  if (slot == 0) return std::ldexp(1.0, layout.min_exponent);
  if (slot == buckets + 1) return std::ldexp(1.0, layout.max_exponent);
  return layout.bucket_high(slot - 1);
}

double clip_minmax(const HistogramLayout& layout, std::span<const double> counts) {
  for (int slot = static_cast<int>(counts.size()) - 1; slot >= 0; --slot) {
    if (counts[slot] > 0) return slot_high(layout, slot);
  }
  return 0.0;
}

double clip_percentile(const HistogramLayout& layout, std::span<const double> counts, double percentile) {
  double total = 0;
  for (double c : counts) total += c;
  const double target = total * percentile / 100.0;
  double cumulative = 0;
  for (size_t slot = 0; slot < counts.size(); ++slot) {
    cumulative += counts[slot];
    if (cumulative >= target && counts[slot] > 0) return slot_high(layout, static_cast<int>(slot));
  }
  return clip_minmax(layout, counts);
}

// Mean squared quantization error of symmetric INT8 with clip c: clipped values lose (v - c)^2, the
// rest rounding noise of step c / 127 (variance step^2 / 12).
double clip_mse(const HistogramLayout& layout, std::span<const double> counts) {
  const double max = clip_minmax(layout, counts);
  double best_clip = max, best_error = std::numeric_limits<double>::infinity();
  const int candidates = 400;
  for (int i = 0; i < candidates; ++i) {
    // Candidates spread geometrically from max down to max / 2^10.
    const double clip = max * std::exp2(-10.0 * i / candidates);
    const double step = clip / 127.0;
    double error = 0;
    for (size_t slot = 0; slot < counts.size(); ++slot) {
      if (counts[slot] == 0) continue;
      const double v = slot_value(layout, static_cast<int>(slot));
      error += counts[slot] * (v > clip ? (v - clip) * (v - clip) : step * step / 12.0);
    }
    if (error < best_error) {
      best_error = error;
      best_clip = clip;
    }
  }
  return best_clip;
}

// TensorRT-style entropy calibration: spread the magnitudes over 2048 linear bins up to the max,
// then pick the threshold whose 128-level quantized distribution is closest (KL) to the clipped one.
double clip_entropy(const HistogramLayout& layout, std::span<const double> counts) {
  const double max = clip_minmax(layout, counts);
  const int bins = 2048, levels = 128;
  const double width = max / bins;
  std::vector<double> linear(bins, 0.0);
  for (size_t slot = 0; slot < counts.size(); ++slot) {
    if (counts[slot] == 0) continue;
    if (slot == 0) {
      linear[0] += counts[slot];
      continue;
    }
    const double low = slot + 1 == counts.size() ? max : layout.bucket_low(static_cast<int>(slot) - 1);
    const double high = slot + 1 == counts.size() ? max : layout.bucket_high(static_cast<int>(slot) - 1);
    // Spread the bucket's count uniformly over [low, high).
    const int first = std::min(bins - 1, static_cast<int>(low / width));
    const int last = std::min(bins - 1, static_cast<int>(high / width));
    if (first == last || high <= low) {
      linear[first] += counts[slot];
      continue;
    }
    for (int b = first; b <= last; ++b) {
      const double overlap = std::min(high, (b + 1) * width) - std::max(low, b * width);
      if (overlap > 0) linear[b] += counts[slot] * overlap / (high - low);
    }
  }
  double best_kl = std::numeric_limits<double>::infinity();
  int best_bins = bins;
  std::vector<double> p(bins), q(bins);
  for (int i = levels; i <= bins; i += 8) {
    double outliers = 0;
    for (int b = i; b < bins; ++b) outliers += linear[b];
    std::copy(linear.begin(), linear.begin() + i, p.begin());
    p[i - 1] += outliers;
    // Merge bins [0, i) into `levels` groups, then spread each group's mass over its non-empty bins.
    std::fill(q.begin(), q.begin() + i, 0.0);
    for (int level = 0; level < levels; ++level) {
      const int begin = level * i / levels, end = (level + 1) * i / levels;
      double mass = 0;
      int nonzero = 0;
      for (int b = begin; b < end; ++b) {
        mass += linear[b];
        nonzero += linear[b] > 0;
      }
      for (int b = begin; b < end; ++b) q[b] = linear[b] > 0 ? mass / nonzero : 0.0;
    }
    double p_total = 0, q_total = 0;
    for (int b = 0; b < i; ++b) {
      p_total += p[b];
      q_total += q[b];
    }
    if (p_total <= 0 || q_total <= 0) continue;
    double kl = 0;
    for (int b = 0; b < i; ++b) {
      if (p[b] <= 0) continue;
      const double pb = p[b] / p_total;
      const double qb = q[b] > 0 ? q[b] / q_total : 1e-12;
      kl += pb * std::log(pb / qb);
    }
    if (kl < best_kl) {
      best_kl = kl;
      best_bins = i;
    }
  }
  return (best_bins + 0.5) * width;
}

// The method's clip, at most kTrimHeadroom x the largest value left once `trimmed` counts are taken
// off the top: the most that mass could do, if few participants sent it, is stretch the clip by that
// factor. Honest tails seldom reach past it, so it seldom changes an honest clip (which trimming
// itself would: cutting a point's largest values, the logits' above all, costs far more).
double bounded_clip(const HistogramLayout& layout, std::span<const double> counts, const ScaleMethodSpec& method,
                    double trimmed) {
  const double clip = clip_magnitude(layout, counts, method);
  if (trimmed <= 0) return clip;
  std::vector<double> rest(counts.begin(), counts.end());
  for (size_t slot = rest.size(); slot-- > 0 && trimmed > 0;) {
    const double taken = std::min(rest[slot], trimmed);
    rest[slot] -= taken;
    trimmed -= taken;
  }
  return std::min(clip, kTrimHeadroom * clip_minmax(layout, rest));
}

}  // namespace

ScaleMethodSpec ScaleMethodSpec::parse(const std::string& text) {
  ScaleMethodSpec spec;
  if (text == "minmax") {
    spec.method = ScaleMethod::kMinMax;
  } else if (text == "entropy") {
    spec.method = ScaleMethod::kEntropy;
  } else if (text == "mse") {
    spec.method = ScaleMethod::kMse;
  } else if (text.rfind("percentile:", 0) == 0) {
    spec.method = ScaleMethod::kPercentile;
    const std::string number = text.substr(11);
    char* end = nullptr;
    spec.percentile = std::strtod(number.c_str(), &end);
    if (number.empty() || end != number.c_str() + number.size() || !(spec.percentile > 50.0 && spec.percentile <= 100.0)) {
      fail("scale method '{}': the percentile must be a number in (50, 100]", text);
    }
  } else {
    fail("unknown scale method '{}' (minmax, percentile:P, entropy, mse)", text);
  }
  return spec;
}

std::string ScaleMethodSpec::to_string() const {
  switch (method) {
    case ScaleMethod::kMinMax:
      return "minmax";
    case ScaleMethod::kPercentile:
      return fmt::format("percentile:{}", percentile);
    case ScaleMethod::kEntropy:
      return "entropy";
    case ScaleMethod::kMse:
      return "mse";
  }
  return "?";
}

double clip_magnitude(const HistogramLayout& layout, std::span<const double> magnitude_counts, const ScaleMethodSpec& method) {
  switch (method.method) {
    case ScaleMethod::kMinMax:
      return clip_minmax(layout, magnitude_counts);
    case ScaleMethod::kPercentile:
      return clip_percentile(layout, magnitude_counts, method.percentile);
    case ScaleMethod::kEntropy:
      return clip_entropy(layout, magnitude_counts);
    case ScaleMethod::kMse:
      return clip_mse(layout, magnitude_counts);
  }
  return 0.0;
}

namespace {

// One point's clips: the magnitude clip of both signs (symmetric), or one per sign (asymmetric).
struct ActivationClips {
  double high = 0;  // symmetric: the magnitude clip; asymmetric: the positive side's
  double low = 0;   // asymmetric: the negative side's magnitude
};

ActivationClips activation_clips(const HistogramLayout& layout, std::span<const uint64_t> counts, const ScaleMethodSpec& method,
                                 bool asymmetric, double trim_share) {
  const size_t slots = static_cast<size_t>(layout.buckets()) + 2;
  const HistogramSummary summary = summarize_histogram(layout, counts);
  if (summary.total == 0) fail("no values were observed");
  if (!(trim_share >= 0 && trim_share < 0.5)) fail("trim share {}: must be in [0, 0.5)", trim_share);
  const double trimmed = trim_share * static_cast<double>(summary.total);
  // Values at or above 2^max_exponent (and non-finite ones) saturate: they count in the highest
  // non-empty bucket of their sign inside the range (at its top if there is none). One of them no
  // longer fails every round, anonymously, under secure aggregation, nor stretches a minmax or mse
  // clip to 2^max_exponent; the coordinator reports them, and the range is a round setting.
  auto sign_counts = [&](bool negative) {
    std::vector<double> out(slots);
    const size_t block = HistogramSlots::sign_block(layout, negative);
    for (size_t s = 0; s < slots; ++s) out[s] = static_cast<double>(counts[block + s]);
    for (size_t s = slots - 2; s >= 1 && out[slots - 1] > 0; --s) {
      if (out[s] > 0) out[s] += std::exchange(out[slots - 1], 0.0);
    }
    return out;
  };
  const double zeros = static_cast<double>(counts[HistogramSlots::kZeros]);
  if (!asymmetric) {
    std::vector<double> magnitudes = sign_counts(false);
    const std::vector<double> negative = sign_counts(true);
    for (size_t s = 0; s < slots; ++s) magnitudes[s] += negative[s];
    magnitudes[0] += zeros;
    return {bounded_clip(layout, magnitudes, method, trimmed), 0};
  }
  // Asymmetric: zeros count on both sides, so each side's percentile covers the whole distribution share.
  std::vector<double> positive = sign_counts(false), negative = sign_counts(true);
  positive[0] += zeros;
  negative[0] += zeros;
  // From each side: the trimmed mass could sit on either sign.
  return {summary.positive > 0 ? bounded_clip(layout, positive, method, trimmed) : 0.0,
          summary.negative > 0 ? bounded_clip(layout, negative, method, trimmed) : 0.0};
}

QuantParams params_of(const HistogramLayout& layout, const ActivationClips& clips, bool asymmetric) {
  const double floor = std::ldexp(1.0, layout.min_exponent);
  QuantParams params;
  if (!asymmetric) {
    params.scale = static_cast<float>(std::max(floor, clips.high) / 127.0);
    return params;
  }
  const double range = std::max(floor, clips.high + clips.low);
  params.scale = static_cast<float>(range / 255.0);
  params.zero_point = static_cast<int32_t>(std::clamp(std::nearbyint(-128.0 + clips.low / params.scale), -128.0, 127.0));
  return params;
}

}  // namespace

QuantParams activation_params(const HistogramLayout& layout, std::span<const uint64_t> counts, const ScaleMethodSpec& method,
                              bool asymmetric, double trim_share) {
  return params_of(layout, activation_clips(layout, counts, method, asymmetric, trim_share), asymmetric);
}

QuantParams median_activation_params(const HistogramLayout& layout, std::span<const std::span<const uint64_t>> groups,
                                     const ScaleMethodSpec& method, bool asymmetric) {
  if (groups.empty()) fail("no group statistics");
  std::vector<double> high, low;
  for (size_t g = 0; g < groups.size(); ++g) {
    const ActivationClips clips = with_context([&] { return fmt::format("group {}", g + 1); },
                                               [&] { return activation_clips(layout, groups[g], method, asymmetric, 0); });
    high.push_back(clips.high);
    low.push_back(clips.low);
  }
  // The lower middle one: with an even count, a group on either side moves it only within the others.
  auto median = [](std::vector<double>& values) {
    const auto middle = values.begin() + static_cast<ptrdiff_t>((values.size() - 1) / 2);
    std::nth_element(values.begin(), middle, values.end());
    return *middle;
  };
  return params_of(layout, {median(high), median(low)}, asymmetric);
}

QuantizedMatrix quantize_weights(std::span<const float> weights, int rows, int cols, WeightGranularity granularity) {
  QuantizedMatrix out;
  out.rows = rows;
  out.cols = cols;
  out.granularity = granularity;
  out.values.resize(static_cast<size_t>(rows) * cols);
  auto scale_of = [](std::span<const float> values) {
    float max = 0;
    for (float v : values) max = std::max(max, std::abs(v));
    return max > 0 ? max / 127.0f : 1.0f;
  };
  // Group scales are binary16 values (as llama.cpp's Q8_0 stores them): the kernels read them as such.
  // A scale rounded down can put a weight a fraction past 127: the clamp keeps it in range.
  auto group_scale_of = [&](std::span<const float> values) {
    const float scale = f16_to_f32(f32_to_f16(scale_of(values)));
    if (!std::isfinite(scale)) fail("weights of magnitude {} do not fit binary16 group scales", scale * 127.0f);
    return scale > 0.0f ? scale : 0x1p-24f;  // the smallest binary16 above 0 for weights below its range
  };
  // Each scaled piece of a row: the whole row, or each group of kWeightGroup input channels.
  const int piece = granularity == WeightGranularity::kPerGroup ? kWeightGroup : cols;
  if (granularity == WeightGranularity::kPerTensor) out.scales.push_back(scale_of(weights));
  for (int r = 0; r < rows; ++r) {
    for (int begin = 0; begin < cols; begin += piece) {
      const int length = std::min(piece, cols - begin);
      auto part = weights.subspan(static_cast<size_t>(r) * cols + begin, length);
      if (granularity == WeightGranularity::kPerChannel) out.scales.push_back(scale_of(part));
      if (granularity == WeightGranularity::kPerGroup) out.group_scales.push_back(f32_to_f16(group_scale_of(part)));
      const float scale = granularity == WeightGranularity::kPerGroup ? f16_to_f32(out.group_scales.back()) : out.scales.back();
      for (int c = 0; c < length; ++c) {
        out.values[static_cast<size_t>(r) * cols + begin + c] =
            static_cast<int8_t>(std::clamp(std::nearbyint(part[c] / scale), -127.0f, 127.0f));
      }
    }
  }
  return out;
}

void QuantizedMatrix::check(const std::string& what) const {
  const size_t count = static_cast<size_t>(std::max(rows, 0)) * static_cast<size_t>(std::max(cols, 0));
  const size_t stored = bits == 4 ? codes.size() * 2 : values.size();
  const size_t expected_scales = per_group() ? static_cast<size_t>(std::max(rows, 0)) * static_cast<size_t>(std::max(groups(), 0))
                                 : per_channel() ? static_cast<size_t>(rows)
                                                 : 1;
  const size_t held_scales = per_group() ? group_scales.size() : scales.size();
  const bool stray = (bits == 4 ? !values.empty() : !codes.empty()) || (per_group() ? !scales.empty() : !group_scales.empty());
  if (rows <= 0 || cols <= 0 || stored != count || stray || held_scales != expected_scales) {
    fail("{}: {} quantized weights and {} scales do not fit ({}, {}) {}", what, stored, held_scales, rows, cols,
         per_group()     ? "per group"
         : per_channel() ? "per channel"
                         : "per tensor");
  }
  if (bits != 8 && bits != 5 && bits != 4) fail("{}: {}-bit weights (8, 5 or 4)", what, bits);
  if (bits < 8 && (!per_group() || cols % kWeightGroup != 0)) {
    fail("{}: {}-bit weights need groups of {} input channels, and ({}, {}) has no whole groups", what, bits, kWeightGroup, rows,
         cols);
  }
  auto check_scale = [&](float scale) {
    const bool nonzero = bits < 8 ? scale != 0 : scale > 0;
    if (!nonzero || !std::isfinite(scale))
      fail("{}: weight scale {} is not {} and finite", what, scale, bits < 8 ? "nonzero" : "positive");
  };
  for (const float scale : scales) check_scale(scale);
  for (const uint16_t half : group_scales) check_scale(f16_to_f32(half));
}

int8_t quantize_value(float value, const QuantParams& params) {
  const float q = std::nearbyint(value / params.scale) + static_cast<float>(params.zero_point);
  return static_cast<int8_t>(std::clamp(q, -128.0f, 127.0f));
}

}  // namespace fedcal
