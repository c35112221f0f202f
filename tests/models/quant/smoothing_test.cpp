#include "models/quant/smoothing.h"

#include <doctest/doctest.h>

#include <cmath>
#include <random>
#include <string>

#include "common/error.h"
#include "models/engine/transformer.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/importance.h"
#include "models/quant/quantize.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

constexpr SmoothingSite kAllSites[] = {SmoothingSite::kAttnIn, SmoothingSite::kAttnOut, SmoothingSite::kFfnIn, SmoothingSite::kFfnHidden};

std::vector<float> logits_of(const Model& model, const XnnRuntime& runtime, const std::vector<int>& tokens,
                             const QuantizedLinears* int8 = nullptr) {
  Transformer transformer(model, runtime, {}, int8);
  const auto logits = transformer.forward(tokens, 0, true);
  return {logits.begin(), logits.end()};
}

// Statistics with importance sums of `model` in FP32 on `sequences`.
CalibrationStats calibrate_with_importance(const Model& model, const XnnRuntime& runtime, const std::vector<std::vector<int>>& sequences) {
  Transformer fp32(model, runtime);
  CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model), {}, /*with_importance=*/true);
  StatsRecorder recorder(stats);
  fp32.set_observer(&recorder);
  for (const std::vector<int>& tokens : sequences) {
    fp32.forward(tokens, 0, true);
    stats.sequences += 1;
    stats.tokens += tokens.size();
  }
  return stats;
}

double max_relative_difference(const std::vector<float>& a, const std::vector<float>& b) {
  double worst = 0, scale = 0;
  for (size_t i = 0; i < a.size(); ++i) {
    worst = std::max(worst, static_cast<double>(std::fabs(a[i] - b[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(b[i])));
  }
  return worst / scale;
}

TEST_CASE("Folded smoothing factors leave the FP32 model's outputs unchanged: shared KV heads, q/k/v biases, q/k norms, untied head") {
  for (const char* preset : {"tiny", "tiny-mha", "tiny-qwen2", "tiny-qwen3", "tiny-smollm2"}) {
    const std::string name = preset;
    CAPTURE(name);
    const Model model = synthesize_model(find_synth_preset(preset).config, 5);
    XnnRuntime runtime(1);
    std::mt19937 rng(3);
    const std::vector<int> tokens = testing::random_tokens(rng, model.config.vocab_size, 40);
    const std::vector<float> before = logits_of(model, runtime, tokens);
    Model smoothed = model;
    std::uniform_real_distribution<float> log_factor(std::log(0.1f), std::log(10.0f));
    for (int layer = 0; layer < model.config.n_layers; ++layer) {
      for (const SmoothingSite site : kAllSites) {
        // Factors of the size smoothing_factors gives (KV channels for attn_out), spread over two decades.
        const ModelConfig& c = model.config;
        std::vector<float> factors(static_cast<size_t>(site == SmoothingSite::kAttnOut      ? c.kv_dim()
                                                       : site == SmoothingSite::kFfnHidden ? c.hidden_dim
                                                                                           : c.dim));
        for (float& f : factors) f = std::exp(log_factor(rng));
        fold_smoothing(smoothed, layer, site, factors);
      }
    }
    CHECK(smoothed.layers[0].wq != model.layers[0].wq);
    CHECK(smoothed.layers[0].wv != model.layers[0].wv);
    CHECK(smoothed.layers[0].w3 != model.layers[0].w3);
    CHECK(max_relative_difference(logits_of(smoothed, runtime, tokens), before) < 1e-4);
  }
  // Factors of the wrong size are refused, naming the site.
  Model model = synthesize_model(find_synth_preset("tiny").config, 5);
  CHECK_THROWS_WITH(fold_smoothing(model, 1, SmoothingSite::kAttnOut, std::vector<float>(64, 2.0f)),
                    doctest::Contains("layers.1.attn_out: 64 smoothing factors for 32 channels"));
}

TEST_CASE("smooth_model migrates a planted outlier channel: smaller static INT8 error per site and KL, the same FP32 model") {
  const ModelConfig config = find_synth_preset("tiny").config;
  Model model = synthesize_model(config, 6);
  // Channel 5 of layer 0's attention input and channel 7 of its FFN hidden activation 40x larger, the
  // function unchanged: the outliers per-tensor activation scales suffer from.
  model.layers[0].attn_norm[5] *= 40.0f;
  for (auto* m : {&model.layers[0].wq, &model.layers[0].wk, &model.layers[0].wv}) {
    for (size_t r = 0; r < m->size() / 64; ++r) (*m)[r * 64 + 5] /= 40.0f;
  }
  const size_t hidden = static_cast<size_t>(config.hidden_dim), dim = static_cast<size_t>(config.dim);
  for (size_t c = 0; c < dim; ++c) model.layers[0].w3[7 * dim + c] *= 40.0f;
  for (size_t r = 0; r < dim; ++r) model.layers[0].w2[r * hidden + 7] /= 40.0f;

  XnnRuntime runtime(1);
  std::mt19937 rng(4);
  std::vector<std::vector<int>> sequences;
  for (int i = 0; i < 6; ++i) sequences.push_back(testing::random_tokens(rng, config.vocab_size, 48));
  const CalibrationStats stats = calibrate_with_importance(model, runtime, sequences);
  const std::vector<int> probe = testing::random_tokens(rng, config.vocab_size, 64);
  const std::vector<float> reference = logits_of(model, runtime, probe);

  Model smoothed = model;
  const std::vector<SiteSmoothing> sites = smooth_model(smoothed, stats, sequences[0], runtime);
  REQUIRE(sites.size() == 8);
  for (const SiteSmoothing& site : sites) {
    CAPTURE(smoothing_site_name(site.layer, site.site));
    CHECK(site.error_with <= site.error_without);
    CHECK(site.alpha.has_value() == (site.error_with < site.error_without));
  }
  CHECK(sites[0].alpha.has_value());                             // layers.0.attn_in
  CHECK(sites[0].error_with < sites[0].error_without / 2);
  CHECK(sites[3].alpha.has_value());                             // layers.0.ffn_hidden
  CHECK(sites[3].error_with < sites[3].error_without / 2);
  CHECK(max_relative_difference(logits_of(smoothed, runtime, probe), reference) < 1e-4);

  // Static INT8 of each, calibrated on its own activations: the smoothed model is closer to FP32.
  QuantizeOptions options;
  options.method = ScaleMethodSpec::parse("minmax");
  options.per_channel = true;
  const QuantizedLinears plain = quantize_model(model, calibrate_with_importance(model, runtime, sequences), options);
  const QuantizedLinears migrated = quantize_model(smoothed, calibrate_with_importance(smoothed, runtime, sequences), options);
  const double kl_plain = testing::mean_kl(reference, logits_of(model, runtime, probe, &plain), config.vocab_size);
  const double kl_smoothed = testing::mean_kl(reference, logits_of(smoothed, runtime, probe, &migrated), config.vocab_size);
  MESSAGE("static INT8 KL, planted outliers: " << kl_plain << " plain, " << kl_smoothed << " smoothed");
  CHECK(kl_smoothed < kl_plain / 2);
}

// The 4-bit package of `model` (every linear, non-uniform grid), rounded by the importance sums of `stats`.
QuantizedLinears four_bit(const Model& model, const CalibrationStats& stats) {
  QuantizeOptions options;
  options.weight_bits = 4;
  options.importance = linear_importance(stats, model.config);
  return quantize_model_weights(model, options);
}

TEST_CASE(
    "AWQ (smooth_model for 4-bit weights) scales busy input channels up: smaller 4-bit error per site and KL, the same FP32 "
    "model") {
  const ModelConfig config = find_synth_preset("tiny").config;
  Model model = synthesize_model(config, 7);
  // Four channels of layer 0's attention input and four of layer 1's FFN input 12x busier, their weight
  // columns 12x smaller, the function unchanged: within each group of 32 such a column's weights take
  // few of the levels while its activations carry much of the output.
  const size_t dim = static_cast<size_t>(config.dim);
  for (const size_t channel : {3, 17, 40, 58}) {
    model.layers[0].attn_norm[channel] *= 12.0f;
    for (auto* m : {&model.layers[0].wq, &model.layers[0].wk, &model.layers[0].wv}) {
      for (size_t r = 0; r < m->size() / dim; ++r) (*m)[r * dim + channel] /= 12.0f;
    }
    model.layers[1].ffn_norm[channel] *= 12.0f;
    for (auto* m : {&model.layers[1].w1, &model.layers[1].w3}) {
      for (size_t r = 0; r < m->size() / dim; ++r) (*m)[r * dim + channel] /= 12.0f;
    }
  }
  XnnRuntime runtime(1);
  std::mt19937 rng(8);
  std::vector<std::vector<int>> sequences;
  for (int i = 0; i < 6; ++i) sequences.push_back(testing::random_tokens(rng, config.vocab_size, 48));
  const CalibrationStats stats = calibrate_with_importance(model, runtime, sequences);
  const std::vector<int> probe = testing::random_tokens(rng, config.vocab_size, 64);
  const std::vector<float> reference = logits_of(model, runtime, probe);

  Model scaled = model;
  SmoothingOptions awq;
  awq.weight_bits = 4;
  awq.alphas = {0.25, 0.5, 0.75};
  std::vector<int> text;
  for (const std::vector<int>& sequence : sequences) text.insert(text.end(), sequence.begin(), sequence.end());
  const std::vector<SiteSmoothing> sites = smooth_model(scaled, stats, text, runtime, awq);
  REQUIRE(sites.size() == 8);
  for (const SiteSmoothing& site : sites) {
    CAPTURE(smoothing_site_name(site.layer, site.site));
    CHECK(site.error_with <= site.error_without);
    CHECK(site.alpha.has_value() == (site.error_with < site.error_without));
  }
  CHECK(sites[0].alpha.has_value());  // layers.0.attn_in
  CHECK(sites[0].error_with < sites[0].error_without * 0.8);
  CHECK(sites[6].alpha.has_value());  // layers.1.ffn_in
  CHECK(sites[6].error_with < sites[6].error_without * 0.8);
  CHECK(max_relative_difference(logits_of(scaled, runtime, probe), reference) < 1e-4);

  // 4-bit packages of each, rounded by the importance sums recorded on it: the scaled one is closer.
  const QuantizedLinears plain = four_bit(model, stats);
  const QuantizedLinears awq_scaled = four_bit(scaled, calibrate_with_importance(scaled, runtime, sequences));
  const double kl_plain = testing::mean_kl(reference, logits_of(model, runtime, probe, &plain), config.vocab_size);
  const double kl_awq = testing::mean_kl(reference, logits_of(scaled, runtime, probe, &awq_scaled), config.vocab_size);
  MESSAGE("4-bit KL, busy channels: " << kl_plain << " importance-weighted, " << kl_awq << " AWQ-scaled first");
  CHECK(kl_awq < kl_plain * 0.8);
}

TEST_CASE("Smoothing refuses statistics without importance sums and strengths outside [0, 1]") {
  const Model model = synthesize_model(find_synth_preset("tiny").config, 5);
  CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model));
  stats.tokens = 10;
  CHECK_THROWS_WITH(channel_rms(stats, model.config, 0, SmoothingSite::kAttnIn), doctest::Contains("calibrate with --importance"));
  CHECK_THROWS_WITH(smoothing_factors(model, 0, SmoothingSite::kFfnIn, std::vector<float>(64, 1.0f), 1.5),
                    doctest::Contains("alpha 1.5 is not in [0, 1]"));
  CHECK_THROWS_WITH(smoothing_factors(model, 0, SmoothingSite::kFfnIn, std::vector<float>(63, 1.0f), 0.5),
                    doctest::Contains("layers.0.ffn_in: 63 activation magnitudes for 64 channels"));
  CHECK_THROWS_WITH(awq_factors(model.config, 0, SmoothingSite::kFfnIn, std::vector<float>(64, 1.0f), -0.5),
                    doctest::Contains("AWQ alpha -0.5 is not in [0, 1]"));
  SmoothingOptions six_bits;
  six_bits.weight_bits = 6;
  Model copy = model;
  CHECK_THROWS_WITH(smooth_model(copy, stats, {1, 2, 3}, XnnRuntime(1), six_bits), doctest::Contains("6-bit weights: 8 or 4"));
}

}  // namespace
}  // namespace fedcal
