#include "models/quant/smoothing.h"

#include <algorithm>
#include <cmath>
#include <map>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/engine/transformer.h"
#include "models/family/layer_tensors.h"
#include "models/quant/importance.h"
#include "models/quant/int4_format.h"
#include "models/quant/quantization_points.h"
#include "models/quant/scales.h"

namespace fedcal {
namespace {

LayerPoint point_of(SmoothingSite site) {
  switch (site) {
    case SmoothingSite::kAttnIn: return LayerPoint::kAttnIn;
    case SmoothingSite::kAttnOut: return LayerPoint::kAttnOut;
    case SmoothingSite::kFfnIn: return LayerPoint::kFfnIn;
    case SmoothingSite::kFfnHidden: break;
  }
  return LayerPoint::kFfnHidden;
}

constexpr SmoothingSite kSites[] = {SmoothingSite::kAttnIn, SmoothingSite::kAttnOut, SmoothingSite::kFfnIn, SmoothingSite::kFfnHidden};

// The linears reading the site's activation (the layer table's linears with it as input): their
// weights (rows, cols = the site's width).
using Matrix = std::vector<float> LayerWeights::*;
std::vector<Matrix> site_linears(SmoothingSite site) {
  std::vector<Matrix> out;
  for (const LayerTensor& tensor : layer_tensors()) {
    if (tensor.input == point_of(site)) out.push_back(tensor.member);
  }
  return out;
}

// The KV channel that query channel q (of n_heads * head_size) reads.
int kv_channel(const ModelConfig& c, int q) {
  const int head_size = c.head_size(), group = c.n_heads / c.n_kv_heads;
  return q / head_size / group * head_size + q % head_size;
}

float factor(float activation, float weight, double alpha) {
  if (!(activation > 0.0f) || !(weight > 0.0f) || !std::isfinite(activation) || !std::isfinite(weight)) return 1.0f;
  const double s = std::pow(static_cast<double>(activation), alpha) / std::pow(static_cast<double>(weight), 1.0 - alpha);
  return std::isfinite(s) && s > 0 ? static_cast<float>(s) : 1.0f;
}

// The factor of each of the site's channels (for attn_out: each query channel, from its KV channel's).
std::vector<float> per_channel(const ModelConfig& c, SmoothingSite site, const std::vector<float>& factors) {
  if (site != SmoothingSite::kAttnOut) return factors;
  std::vector<float> out(static_cast<size_t>(c.q_dim()));
  for (int q = 0; q < c.q_dim(); ++q) out[static_cast<size_t>(q)] = factors[static_cast<size_t>(kv_channel(c, q))];
  return out;
}

// Captures the activations at the smoothing sites of forward passes (one after the other: their rows
// appended).
class SiteCapture : public ActivationObserver {
 public:
  void observe(int point, std::span<const float> values) override {
    const auto kind = static_cast<LayerPoint>(point % kPointsPerLayer);
    if (kind == LayerPoint::kAttnIn || kind == LayerPoint::kAttnOut || kind == LayerPoint::kFfnIn || kind == LayerPoint::kFfnHidden)
      values_[point].insert(values_[point].end(), values.begin(), values.end());
  }
  const std::vector<float>& at(int point) const { return values_.at(point); }

 private:
  std::map<int, std::vector<float>> values_;
};

// y (rows_x, rows_w) = x (rows_x, cols) . w (rows_w, cols)^T
std::vector<float> matmul_t(const std::vector<float>& x, const std::vector<float>& w, size_t cols) {
  const size_t n = x.size() / cols, m = w.size() / cols;
  std::vector<float> y(n * m);
  for (size_t t = 0; t < n; ++t) {
    for (size_t r = 0; r < m; ++r) {
      float sum = 0.0f;
      for (size_t j = 0; j < cols; ++j) sum += x[t * cols + j] * w[r * cols + j];
      y[t * m + r] = sum;
    }
  }
  return y;
}

double relative_error(const std::vector<float>& y, const std::vector<float>& reference) {
  double error = 0, norm = 0;
  for (size_t i = 0; i < y.size(); ++i) {
    error += (static_cast<double>(y[i]) - reference[i]) * (static_cast<double>(y[i]) - reference[i]);
    norm += static_cast<double>(reference[i]) * reference[i];
  }
  return norm > 0 ? error / norm : error;
}

// The static INT8 error of the site's linears with the activations divided by `s` and the weights'
// columns multiplied by it: the sum over the linears of the relative squared output error, at the best
// of a few clipping ranges of the per-tensor activation scale.
double site_error(const std::vector<float>& x, const std::vector<const std::vector<float>*>& linears,
                  const std::vector<std::vector<float>>& reference, const std::vector<float>& s, bool per_channel) {
  const size_t cols = s.size();
  std::vector<float> smoothed(x.size());
  float max = 0.0f;
  for (size_t i = 0; i < x.size(); ++i) {
    smoothed[i] = x[i] / s[i % cols];
    max = std::max(max, std::fabs(smoothed[i]));
  }
  std::vector<std::vector<float>> weights;
  for (const std::vector<float>* linear : linears) {
    std::vector<float> w = *linear;
    for (size_t i = 0; i < w.size(); ++i) w[i] *= s[i % cols];
    const QuantizedMatrix q = quantize_weights(w, static_cast<int>(w.size() / cols), static_cast<int>(cols), per_channel);
    for (size_t i = 0; i < w.size(); ++i) w[i] = static_cast<float>(q.values[i]) * q.row_scale(static_cast<int>(i / cols));
    weights.push_back(std::move(w));
  }
  double best = INFINITY;
  for (const double clip : {1.0, 0.7, 0.5, 0.35}) {
    const float scale = max > 0.0f ? static_cast<float>(clip) * max / 127.0f : 1.0f;
    std::vector<float> q(smoothed.size());
    for (size_t i = 0; i < q.size(); ++i) q[i] = std::clamp(std::nearbyint(smoothed[i] / scale), -128.0f, 127.0f) * scale;
    double error = 0;
    for (size_t k = 0; k < linears.size(); ++k) error += relative_error(matmul_t(q, weights[k], cols), reference[k]);
    best = std::min(best, error);
  }
  return best;
}

// x (rows, cols) with each row's blocks of 32 quantized to INT8 by their largest magnitude and back,
// as the engine quantizes a fine-grained or 4-bit layer's input at run time.
std::vector<float> block_quantized(const std::vector<float>& x, size_t cols) {
  std::vector<float> q(x.size());
  for (size_t row = 0; row < x.size(); row += cols) {
    for (size_t start = 0; start < cols; start += kWeightGroup) {
      const size_t end = std::min(cols, start + kWeightGroup);
      float max = 0.0f;
      for (size_t j = start; j < end; ++j) max = std::max(max, std::fabs(x[row + j]));
      const float scale = max > 0.0f ? max / 127.0f : 1.0f;
      for (size_t j = start; j < end; ++j) q[row + j] = std::nearbyint(x[row + j] / scale) * scale;
    }
  }
  return q;
}

// The 4-bit error of the site's linears with the activations divided by `s` and the weights' columns
// multiplied by it: the sum over the linears of the relative squared output error, each linear's
// groups rounded with the importance the scaled channels have (mean_square_j / s_j^2), its inputs
// quantized per block of 32.
double site_error_4bit(const std::vector<float>& x, const std::vector<const std::vector<float>*>& linears,
                       const std::vector<std::vector<float>>& reference, const std::vector<float>& s,
                       const std::vector<float>& mean_square, Int4Grid grid) {
  const size_t cols = s.size();
  std::vector<float> smoothed(x.size());
  for (size_t i = 0; i < x.size(); ++i) smoothed[i] = x[i] / s[i % cols];
  const std::vector<float> q = block_quantized(smoothed, cols);
  std::vector<double> importance(cols);
  for (size_t j = 0; j < cols; ++j) importance[j] = static_cast<double>(mean_square[j]) / (static_cast<double>(s[j]) * s[j]);
  double error = 0;
  for (size_t k = 0; k < linears.size(); ++k) {
    std::vector<float> w = *linears[k];
    for (size_t i = 0; i < w.size(); ++i) w[i] *= s[i % cols];
    const int rows = static_cast<int>(w.size() / cols);
    const QuantizedMatrix matrix = quantize_int4_weights(w, rows, static_cast<int>(cols), grid, importance);
    const std::vector<int8_t> levels = weight_values(matrix);
    for (size_t i = 0; i < w.size(); ++i)
      w[i] = static_cast<float>(levels[i]) * matrix.scale_at(static_cast<int>(i / cols), static_cast<int>(i % cols));
    error += relative_error(matmul_t(q, w, cols), reference[k]);
  }
  return error;
}

// Per KV channel for attn_out (the largest of its query channels' values), else `values` as they are.
std::vector<float> per_factor(const ModelConfig& c, SmoothingSite site, const std::vector<float>& values) {
  if (site != SmoothingSite::kAttnOut) return values;
  std::vector<float> out(static_cast<size_t>(c.kv_dim()), 0.0f);
  for (int q = 0; q < c.q_dim(); ++q) {
    const size_t k = static_cast<size_t>(kv_channel(c, q));
    out[k] = std::max(out[k], values[static_cast<size_t>(q)]);
  }
  return out;
}

}  // namespace

std::string smoothing_site_name(int layer, SmoothingSite site) {
  static constexpr const char* kNames[] = {"attn_in", "attn_out", "ffn_in", "ffn_hidden"};
  return "layers." + std::to_string(layer) + "." + kNames[static_cast<int>(site)];
}

std::vector<float> channel_rms(const CalibrationStats& stats, const ModelConfig& config, int layer, SmoothingSite site) {
  if (!stats.has_importance()) fail("the statistics hold no importance sums: calibrate with --importance");
  if (stats.tokens == 0) fail("the statistics cover no tokens");
  const std::string& name = stats.points.at(static_cast<size_t>(layer_point(layer, point_of(site))));
  size_t offset = 0;
  for (size_t i = 0; i < stats.importance_points.size(); ++i) {
    if (stats.importance_points[i] == name) {
      if (static_cast<int>(stats.importance_widths[i]) != point_width(config, layer_point(layer, point_of(site))))
        fail("importance sums of {}: {} channels, the model has {}", name, stats.importance_widths[i],
             point_width(config, layer_point(layer, point_of(site))));
      std::vector<float> rms(stats.importance_widths[i]);
      for (size_t j = 0; j < rms.size(); ++j) {
        const double mean = std::ldexp(static_cast<double>(stats.importance[offset + j]), -kImportanceFractionBits) / static_cast<double>(stats.tokens);
        rms[j] = static_cast<float>(std::sqrt(mean));
      }
      return rms;
    }
    offset += stats.importance_widths[i];
  }
  fail("the statistics hold no importance sums for {}", name);
}

std::vector<float> smoothing_factors(const Model& model, int layer, SmoothingSite site, const std::vector<float>& activation, double alpha) {
  const ModelConfig& c = model.config;
  const int width = point_width(c, layer_point(layer, point_of(site)));
  if (static_cast<int>(activation.size()) != width) fail("{}: {} activation magnitudes for {} channels", smoothing_site_name(layer, site), activation.size(), width);
  if (!(alpha >= 0.0 && alpha <= 1.0)) fail("smoothing alpha {} is not in [0, 1]", alpha);
  std::vector<float> weight(static_cast<size_t>(width), 0.0f);
  for (const Matrix matrix : site_linears(site)) {
    const std::vector<float>& w = model.layers.at(static_cast<size_t>(layer)).*matrix;
    for (size_t i = 0; i < w.size(); ++i) weight[i % static_cast<size_t>(width)] = std::max(weight[i % static_cast<size_t>(width)], std::fabs(w[i]));
  }
  // attn_out: one factor per KV channel, from the largest magnitudes of its query heads
  const std::vector<float> a = per_factor(c, site, activation);
  weight = per_factor(c, site, weight);
  std::vector<float> factors(a.size());
  for (size_t j = 0; j < a.size(); ++j) factors[j] = factor(a[j], weight[j], alpha);
  return factors;
}

std::vector<float> awq_factors(const ModelConfig& c, int layer, SmoothingSite site, const std::vector<float>& activation,
                               double alpha) {
  const int width = point_width(c, layer_point(layer, point_of(site)));
  if (static_cast<int>(activation.size()) != width)
    fail("{}: {} activation magnitudes for {} channels", smoothing_site_name(layer, site), activation.size(), width);
  if (!(alpha >= 0.0 && alpha <= 1.0)) fail("AWQ alpha {} is not in [0, 1]", alpha);
  const std::vector<float> a = per_factor(c, site, activation);
  std::vector<float> factors(a.size());
  float low = INFINITY, high = 0.0f;
  for (size_t j = 0; j < a.size(); ++j) {
    factors[j] = factor(a[j], 1.0f, alpha);
    low = std::min(low, factors[j]);
    high = std::max(high, factors[j]);
  }
  const float middle = std::sqrt(low * high);
  if (std::isfinite(middle) && middle > 0.0f) {
    for (float& f : factors) f /= middle;
  }
  return factors;
}

void fold_smoothing(Model& model, int layer, SmoothingSite site, const std::vector<float>& factors) {
  const ModelConfig& c = model.config;
  LayerWeights& w = model.layers.at(static_cast<size_t>(layer));
  const size_t expected = static_cast<size_t>(site == SmoothingSite::kAttnOut ? c.kv_dim() : point_width(c, layer_point(layer, point_of(site))));
  if (factors.size() != expected) fail("{}: {} smoothing factors for {} channels", smoothing_site_name(layer, site), factors.size(), expected);
  // The producer of the activation: divided.
  auto divide_rows = [&](std::vector<float>& m, size_t cols) {
    for (size_t i = 0; i < m.size(); ++i) m[i] /= factors[i / cols];
  };
  // A norm's multipliers are divided: w, or (1 + w) for Gemma's norms.
  auto divide_norm = [&](std::vector<float>& norm) {
    std::vector<float> multipliers = c.norm_multipliers(norm);
    for (size_t j = 0; j < factors.size(); ++j) multipliers[j] /= factors[j];
    norm = c.norm_weights(multipliers);
  };
  switch (site) {
    case SmoothingSite::kAttnIn:
      divide_norm(w.attn_norm);
      break;
    case SmoothingSite::kAttnOut:
      divide_rows(w.wv, static_cast<size_t>(c.dim));
      for (size_t k = 0; k < w.bv.size(); ++k) w.bv[k] /= factors[k];
      break;
    case SmoothingSite::kFfnIn:
      divide_norm(w.ffn_norm);
      break;
    case SmoothingSite::kFfnHidden:
      divide_rows(w.w3, static_cast<size_t>(c.dim));
      break;
  }
  // Its readers: columns multiplied.
  const std::vector<float> s = per_channel(c, site, factors);
  for (const Matrix matrix : site_linears(site)) {
    std::vector<float>& m = w.*matrix;
    for (size_t i = 0; i < m.size(); ++i) m[i] *= s[i % s.size()];
  }
}

std::vector<SiteSmoothing> smooth_model(Model& model, const CalibrationStats& stats, const std::vector<int>& tokens,
                                        const XnnRuntime& runtime, const SmoothingOptions& options) {
  const ModelConfig& c = model.config;
  if (tokens.empty()) fail("smoothing needs text to measure the error on");
  if (options.weight_bits != 8 && options.weight_bits != 4) fail("smoothing for {}-bit weights: 8 or 4", options.weight_bits);
  SiteCapture capture;
  {
    Transformer fp32(model, runtime);
    fp32.set_observer(&capture);
    const size_t window = static_cast<size_t>(c.max_seq_len);
    for (size_t start = 0; start < tokens.size() && start / window < std::max<size_t>(options.windows, 1); start += window) {
      const std::vector<int> part(tokens.begin() + static_cast<ptrdiff_t>(start),
                                  tokens.begin() + static_cast<ptrdiff_t>(std::min(tokens.size(), start + window)));
      fp32.forward(part, 0, true);
    }
  }
  std::vector<SiteSmoothing> result;
  for (int layer = 0; layer < c.n_layers; ++layer) {
    for (const SmoothingSite site : kSites) {
      const std::vector<float>& x = capture.at(layer_point(layer, point_of(site)));
      std::vector<const std::vector<float>*> linears;
      for (const Matrix matrix : site_linears(site)) linears.push_back(&(model.layers[static_cast<size_t>(layer)].*matrix));
      const size_t cols = static_cast<size_t>(point_width(c, layer_point(layer, point_of(site))));
      std::vector<std::vector<float>> reference;
      for (const std::vector<float>* linear : linears) reference.push_back(matmul_t(x, *linear, cols));
      const std::vector<float> rms = channel_rms(stats, c, layer, site);
      std::vector<float> mean_square(rms.size());
      for (size_t j = 0; j < rms.size(); ++j) mean_square[j] = rms[j] * rms[j];
      const bool four_bit = options.weight_bits == 4;
      auto error_of = [&](const std::vector<float>& s) {
        return four_bit ? site_error_4bit(x, linears, reference, s, mean_square, options.grid)
                        : site_error(x, linears, reference, s, options.per_channel_weights);
      };
      SiteSmoothing choice{layer, site, std::nullopt, 0, 0};
      if (four_bit && cols % kInt4Group != 0) {  // its linears stay fine-grained INT8 (four_bit_skipped): left as it is
        result.push_back(choice);
        continue;
      }
      choice.error_without = choice.error_with = error_of(std::vector<float>(cols, 1.0f));
      std::vector<float> best;
      for (const double alpha : options.alphas) {
        std::vector<float> factors =
            four_bit ? awq_factors(c, layer, site, rms, alpha) : smoothing_factors(model, layer, site, rms, alpha);
        const double error = error_of(per_channel(c, site, factors));
        if (error < choice.error_with) {
          choice.alpha = alpha;
          choice.error_with = error;
          best = std::move(factors);
        }
      }
      if (choice.alpha) fold_smoothing(model, layer, site, best);
      result.push_back(choice);
    }
  }
  return result;
}

nlohmann::json smoothing_sites_json(const std::vector<SiteSmoothing>& sites) {
  nlohmann::json list = nlohmann::json::array();
  for (const SiteSmoothing& site : sites) {
    list.push_back({{"site", smoothing_site_name(site.layer, site.site)},
                    {"alpha", site.alpha ? nlohmann::json(*site.alpha) : nlohmann::json(nullptr)},
                    {"error_without", site.error_without},
                    {"error_with", site.error_with}});
  }
  return list;
}

}  // namespace fedcal
