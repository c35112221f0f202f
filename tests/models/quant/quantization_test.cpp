// Calibration statistics, scale methods and the W8A8 linear layer.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "common/error.h"
#include "models/engine/transformer.h"
#include "models/format/model_package.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/linear_dynamic_int8.h"
#include "models/quant/linear_int8.h"
#include "models/quant/quantize.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"
#include "tests/models/tokenizer/tokenizer_fixtures.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

TEST_CASE("Histogram buckets: every finite value lands in the bucket whose edges contain its magnitude") {
  const HistogramLayout layout;
  std::mt19937 rng(3);
  std::uniform_real_distribution<double> exponent(-19.9, 11.9);
  for (int i = 0; i < 20000; ++i) {
    const float value = static_cast<float>(std::exp2(exponent(rng))) * (i % 2 ? -1.0f : 1.0f);
    std::vector<uint64_t> counts(layout.counts_per_point(), 0);
    accumulate_histogram(layout, std::span(&value, 1), counts);
    const size_t block = HistogramSlots::sign_block(layout, value < 0);
    int bucket = -1;
    for (int b = 0; b < layout.buckets(); ++b) {
      if (counts[block + 1 + b] == 1) bucket = b;
    }
    REQUIRE(bucket >= 0);
    CHECK(std::abs(value) >= layout.bucket_low(bucket));
    CHECK(std::abs(value) < layout.bucket_high(bucket));
    CHECK(layout.bucket_high(bucket) / layout.bucket_low(bucket) <= 1.0 + 1.0 / 32 + 1e-12);
  }
  // Zeros, underflow, overflow and non-finite values go to their own slots.
  const std::vector<float> special{0.0f, -0.0f, 1e-9f, 1e6f, INFINITY, NAN};
  std::vector<uint64_t> counts(layout.counts_per_point(), 0);
  accumulate_histogram(layout, special, counts);
  const HistogramSummary summary = summarize_histogram(layout, counts);
  CHECK(summary.zeros == 2);
  CHECK(summary.overflow == 3);
  CHECK(summary.total == 6);
  CHECK(counts[HistogramSlots::sign_block(layout, false)] == 1);  // 1e-9 underflows
}

TEST_CASE("Statistics of two shards merged equal the statistics of their concatenation, bit for bit" * doctest::timeout(120)) {
  testing::ScratchDir dir;
  const std::string train = testing::tinystories_train();
  const SentencePieceTokenizer tokenizer(testing::train_sentencepiece(dir.root(), train.substr(0, 100000), 512));
  const Model model = synthesize_model(find_synth_preset("tiny").config, 8);
  XnnRuntime runtime(1);
  Transformer transformer(model, runtime);
  const std::string fingerprint = model_fingerprint(model);

  // Two shards cut at a line boundary.
  const size_t cut = train.find('\n', 20000) + 1;
  const std::string shard_a = train.substr(0, cut), shard_b = train.substr(cut, 20000);
  CalibrationOptions options;
  options.sequences = 1000;
  options.seq_len = 64;
  CalibrationStats a = calibrate(transformer, tokenizer, shard_a, fingerprint, options);
  const CalibrationStats b = calibrate(transformer, tokenizer, shard_b, fingerprint, options);
  const CalibrationStats whole = calibrate(transformer, tokenizer, shard_a + shard_b, fingerprint, options);
  CHECK(a.sequences > 10);
  a.merge(b);
  CHECK(a.counts == whole.counts);
  CHECK(a.sequences == whole.sequences);
  CHECK(a.tokens == whole.tokens);
  CHECK(a.sha256() == whole.sha256());

  // The file format round-trips, and scales from merged stats equal scales from the whole.
  write_stats(a, dir.path("a.stats"));
  const CalibrationStats reread = read_stats(dir.path("a.stats"));
  CHECK(reread.counts == whole.counts);
  CHECK(reread.points == whole.points);
  for (std::string method : {"minmax", "percentile:99.9", "entropy", "mse"}) {
    CAPTURE(method);
    QuantizeOptions q;
    q.method = ScaleMethodSpec::parse(method);
    const auto from_merged = quantize_model(model, reread, q);
    const auto from_whole = quantize_model(model, whole, q);
    for (const auto& [name, layer] : from_whole) {
      CHECK(from_merged.at(name).input == layer.input);
      CHECK(from_merged.at(name).output == layer.output);
    }
  }

  // Statistics of another model, or of another layout, do not merge.
  CalibrationStats other = whole;
  other.model_sha256 = "0000";
  CHECK_THROWS_WITH_AS(a.merge(other), doctest::Contains("different models"), Error);
}

TEST_CASE("Statistics files: bad magic, truncation and inconsistent headers are refused by name") {
  const ModelConfig config = find_synth_preset("tiny").config;
  CalibrationStats stats = CalibrationStats::empty_for(config, "abc");
  const std::vector<std::byte> good = serialize_stats(stats);
  auto error_of = [](std::vector<std::byte> bytes) {
    try {
      parse_stats(bytes, "s.stats");
    } catch (const Error& error) {
      return std::string(error.what());
    }
    return std::string("no error");
  };
  CHECK(error_of(good) == "no error");
  std::vector<std::byte> bad_magic = good;
  bad_magic[0] = std::byte{'X'};
  CHECK(error_of(bad_magic).find("s.stats: not a fedcal statistics file") == 0);
  CHECK(error_of(std::vector<std::byte>(good.begin(), good.end() - 8)).find("need") != std::string::npos);
  CHECK(error_of(std::vector<std::byte>(good.begin(), good.begin() + 12)).find("truncated") != std::string::npos);
  std::vector<std::byte> huge_header = good;
  const uint64_t huge = 1ull << 50;
  std::memcpy(huge_header.data() + 8, &huge, 8);
  CHECK(error_of(huge_header).find("header length") != std::string::npos);

  ModelConfig bigger = config;
  bigger.n_layers = 3;
  CHECK_THROWS_WITH_AS(stats.check_fits(bigger), doctest::Contains("quantization points"), Error);
}

TEST_CASE(
    "Trimmed scales: one participant's share of the values, all at the top, stretches no method's clip past twice the honest "
    "values") {
  const HistogramLayout layout;
  // Five honest participants' values (|x| < ~4.5) and one participant's as many, all at 2000.
  std::vector<float> honest, poison(20000, 2000.0f);
  std::mt19937 rng(5);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < 5 * 20000; ++i) honest.push_back(normal(rng));
  std::vector<uint64_t> clean(layout.counts_per_point(), 0), poisoned(layout.counts_per_point(), 0);
  accumulate_histogram(layout, honest, clean);
  accumulate_histogram(layout, honest, poisoned);
  accumulate_histogram(layout, poison, poisoned);
  const double honest_max = summarize_histogram(layout, clean).max_abs;
  const double share = 1.0 / 6;  // one participant's most values over all of them
  for (const char* method : {"minmax", "percentile:99.99", "mse", "entropy"}) {
    CAPTURE(method);
    const ScaleMethodSpec spec = ScaleMethodSpec::parse(method);
    CHECK(activation_params(layout, poisoned, spec, false).scale * 127 > 1000);  // untrimmed: the poison sets the clip
    CHECK(activation_params(layout, poisoned, spec, false, share).scale * 127 <= kTrimHeadroom * honest_max);
    CHECK(activation_params(layout, poisoned, spec, true, share).scale * 255 <= 2 * kTrimHeadroom * honest_max);
  }
  // On honest values a 1% trim changes nothing here: the largest value is within twice the 99th percentile.
  for (const char* method : {"minmax", "mse"}) {
    const ScaleMethodSpec spec = ScaleMethodSpec::parse(method);
    CHECK(activation_params(layout, clean, spec, false, 0.01) == activation_params(layout, clean, spec, false));
  }
  CHECK_THROWS_WITH_AS(activation_params(layout, clean, ScaleMethodSpec::parse("minmax"), false, 0.5),
                       doctest::Contains("trim share"), Error);
}

TEST_CASE(
    "Median of groups' scales: one group of three whose values sit at 2000 (or at 1e-3) moves no clip out of the honest "
    "groups' range, while it sets the aggregate's") {
  const HistogramLayout layout;
  std::mt19937 rng(9);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  auto honest_group = [&](float spread) {
    std::vector<float> values;
    for (int i = 0; i < 20000; ++i) values.push_back(spread * normal(rng));
    values.push_back(-3 * spread);  // a negative tail for the asymmetric case
    std::vector<uint64_t> counts(layout.counts_per_point(), 0);
    accumulate_histogram(layout, values, counts);
    return counts;
  };
  const std::vector<uint64_t> a = honest_group(1.0f), b = honest_group(1.5f);
  for (const float poison_value : {2000.0f, 1e-3f}) {
    CAPTURE(poison_value);
    std::vector<uint64_t> poisoned(layout.counts_per_point(), 0), sum(layout.counts_per_point(), 0);
    accumulate_histogram(layout, std::vector<float>(20000, poison_value), poisoned);
    for (size_t i = 0; i < sum.size(); ++i) sum[i] = a[i] + b[i] + poisoned[i];
    const std::vector<std::span<const uint64_t>> groups = {a, poisoned, b};
    for (const char* method : {"minmax", "percentile:99.99", "mse", "entropy"}) {
      CAPTURE(method);
      const ScaleMethodSpec spec = ScaleMethodSpec::parse(method);
      for (const bool asymmetric : {false, true}) {
        CAPTURE(asymmetric);
        const float low =
            std::min(activation_params(layout, a, spec, asymmetric).scale, activation_params(layout, b, spec, asymmetric).scale);
        const float high =
            std::max(activation_params(layout, a, spec, asymmetric).scale, activation_params(layout, b, spec, asymmetric).scale);
        const QuantParams median = median_activation_params(layout, groups, spec, asymmetric);
        CHECK(median.scale >= low);
        CHECK(median.scale <= high);
        if (poison_value > 1) CHECK(activation_params(layout, sum, spec, asymmetric).scale > 2 * high);  // the aggregate's
      }
    }
  }
  // One group: its own parameters; the groups' order does not matter.
  const ScaleMethodSpec mse = ScaleMethodSpec::parse("mse");
  CHECK(median_activation_params(layout, std::vector<std::span<const uint64_t>>{a}, mse, true) ==
        activation_params(layout, a, mse, true));
  CHECK(median_activation_params(layout, std::vector<std::span<const uint64_t>>{a, b}, mse, false) ==
        median_activation_params(layout, std::vector<std::span<const uint64_t>>{b, a}, mse, false));
  CHECK_THROWS_WITH_AS(
      median_activation_params(layout, std::vector<std::span<const uint64_t>>{a, std::vector<uint64_t>(a.size(), 0)}, mse, false),
      doctest::Contains("group 2: no values were observed"), Error);
}

TEST_CASE(
    "Scale methods on a known distribution: min-max is the max, percentile below it, MSE minimizes the error, entropy clips "
    "outliers") {
  const HistogramLayout layout;
  std::vector<float> values;
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  for (int i = 0; i < 100000; ++i) values.push_back(normal(rng));
  values.push_back(40.0f);  // one outlier
  std::vector<uint64_t> counts(layout.counts_per_point(), 0);
  accumulate_histogram(layout, values, counts);

  const QuantParams minmax = activation_params(layout, counts, ScaleMethodSpec::parse("minmax"), false);
  CHECK(minmax.scale * 127 >= 40.0f);
  CHECK(minmax.scale * 127 <= 40.0f * (1 + 1.0 / 32));
  CHECK(minmax.zero_point == 0);
  const QuantParams p999 = activation_params(layout, counts, ScaleMethodSpec::parse("percentile:99.9"), false);
  CHECK(p999.scale * 127 == doctest::Approx(3.29).epsilon(0.05));  // |N(0,1)| 99.9th percentile
  // MSE picks the clip whose quantization error on the values is (near) smallest: no worse than min-max's.
  auto empirical_mse = [&](const QuantParams& params) {
    double error = 0;
    for (float v : values) {
      const double back = params.scale * (quantize_value(v, params) - params.zero_point);
      error += (back - v) * (back - v);
    }
    return error;
  };
  const QuantParams mse = activation_params(layout, counts, ScaleMethodSpec::parse("mse"), false);
  CHECK(mse.scale < minmax.scale);
  CHECK(empirical_mse(mse) < empirical_mse(minmax));
  CHECK(empirical_mse(mse) < empirical_mse(p999));
  // Entropy clips the lone outlier away but keeps the bulk of the distribution.
  const QuantParams entropy = activation_params(layout, counts, ScaleMethodSpec::parse("entropy"), false);
  CHECK(entropy.scale * 127 < 20.0f);
  CHECK(entropy.scale * 127 > 2.0f);
  const QuantParams asymmetric = activation_params(layout, counts, ScaleMethodSpec::parse("minmax"), true);
  CHECK(asymmetric.scale * 255 == doctest::Approx(40.0 + 4.5).epsilon(0.1));
  CHECK(asymmetric.zero_point < 0);

  CHECK_THROWS_AS(ScaleMethodSpec::parse("percentile:abc"), Error);
  CHECK_THROWS_AS(ScaleMethodSpec::parse("percentile:20"), Error);
  CHECK_THROWS_AS(ScaleMethodSpec::parse("magic"), Error);
  std::vector<uint64_t> empty(layout.counts_per_point(), 0);
  CHECK_THROWS_WITH_AS(activation_params(layout, empty, ScaleMethodSpec{}, false), doctest::Contains("no values"), Error);

  // Values beyond the range (and non-finite ones) fail nothing: they saturate at the largest value
  // in range, and move no clip further than that.
  std::vector<uint64_t> beyond = counts;
  const float outside[] = {1e9f, std::numeric_limits<float>::quiet_NaN()};
  accumulate_histogram(layout, outside, beyond);
  CHECK(activation_params(layout, beyond, ScaleMethodSpec::parse("percentile:99.9"), false).scale == p999.scale);
  CHECK(activation_params(layout, beyond, ScaleMethodSpec::parse("minmax"), false).scale == minmax.scale);
  CHECK(activation_params(layout, beyond, ScaleMethodSpec::parse("mse"), false).scale <= minmax.scale);
  // Only values beyond it: the range's top.
  std::vector<uint64_t> only_beyond(layout.counts_per_point(), 0);
  accumulate_histogram(layout, outside, only_beyond);
  CHECK(activation_params(layout, only_beyond, ScaleMethodSpec::parse("minmax"), false).scale * 127 ==
        doctest::Approx(std::ldexp(1.0, layout.max_exponent)));
}

void check_int8_linear(bool per_channel, bool asymmetric, int threads, bool with_bias = false) {
  CAPTURE(per_channel);
  CAPTURE(asymmetric);
  CAPTURE(with_bias);
  std::mt19937 rng(per_channel * 2 + asymmetric);
  const int in = 96, out = 70, batch = 5;
  std::normal_distribution<float> normal(0.0f, 0.1f);
  std::vector<float> weights(static_cast<size_t>(in) * out);
  for (size_t i = 0; i < weights.size(); ++i) weights[i] = normal(rng) * (1.0f + static_cast<float>(i / in % 7));
  QuantizedLinear layer;
  layer.weights = quantize_weights(weights, out, in, per_channel);
  layer.input = {0.02f, asymmetric ? -17 : 0};
  layer.output = {0.05f, asymmetric ? 9 : 0};
  std::vector<int8_t> input(static_cast<size_t>(batch) * in + XNN_EXTRA_BYTES);
  std::uniform_int_distribution<int> byte(-128, 127);
  for (auto& v : input) v = static_cast<int8_t>(byte(rng));

  // A bias (Qwen2's q/k/v) of a few output steps: folded into the INT32 accumulator.
  std::vector<float> bias;
  for (int o = 0; with_bias && o < out; ++o) bias.push_back(0.05f * static_cast<float>(o % 9 - 4) * 3.3f);
  const std::vector<int32_t> bias_q = with_bias ? int8_bias(layer, bias, "test") : std::vector<int32_t>{};
  if (with_bias) CHECK(bias_q[0] == static_cast<int32_t>(std::nearbyint(bias[0] / (0.02 * layer.weights.row_scale(0)))));

  XnnRuntime runtime(threads);
  LinearInt8 linear(layer, "test", bias);
  std::vector<int8_t> output(static_cast<size_t>(batch) * out);
  linear.run_int8(runtime, batch, input.data(), output.data());
  const std::vector<int8_t> expected = reference_linear_int8(layer, input, batch, bias_q);
  if (with_bias) {
    // The bias moved the outputs by about bias / output scale steps: it was not dropped.
    const std::vector<int8_t> unbiased = reference_linear_int8(layer, input, batch);
    CHECK(std::abs(int{expected[0]} - int{unbiased[0]}) >= 8);
  }
  int max_diff = 0, exact = 0;
  for (size_t i = 0; i < output.size(); ++i) {
    max_diff = std::max(max_diff, std::abs(int{output[i]} - int{expected[i]}));
    exact += output[i] == expected[i];
  }
  CHECK(max_diff <= 1);
  CHECK(exact >= static_cast<int>(output.size() * 0.95));
}

TEST_CASE(
    "An INT8 linear layer equals the plain integer reference within 1 LSB: per-tensor and per-channel, symmetric and "
    "asymmetric") {
  for (bool per_channel : {false, true}) {
    for (bool asymmetric : {false, true}) check_int8_linear(per_channel, asymmetric, 1);
  }
  check_int8_linear(true, false, 2);
  for (bool per_channel : {false, true}) check_int8_linear(per_channel, true, 1, /*with_bias=*/true);
  // A bias that cannot be an INT32 accumulator value at these scales is refused, naming the layer.
  QuantizedLinear tiny;
  tiny.weights = quantize_weights(std::vector<float>(4, 1e-6f), 2, 2, false);
  tiny.input = {1e-6f, 0};
  tiny.output = {1.0f, 0};
  CHECK_THROWS_WITH_AS(int8_bias(tiny, std::vector<float>{1e9f, 0.0f}, "layers.0.wq"), doctest::Contains("layers.0.wq: bias"), Error);
}

// The statistics of `model` run in FP32 on `sequences`.
CalibrationStats calibrate_on(const Model& model, const XnnRuntime& runtime, const std::vector<std::vector<int>>& sequences) {
  Transformer fp32(model, runtime);
  CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model));
  StatsRecorder recorder(stats);
  fp32.set_observer(&recorder);
  for (const std::vector<int>& tokens : sequences) fp32.forward(tokens, 0, true);
  return stats;
}

// The searches' setting: the tiny synth model, one window of 64 random tokens from `seed`, its
// statistics on that window, minmax scales.
struct TinyWindow {
  explicit TinyWindow(unsigned seed) : rng(seed), tokens(testing::random_tokens(rng, config.vocab_size, 64)) {
    stats = calibrate_on(model, runtime, {tokens});
    options.method = ScaleMethodSpec::parse("minmax");
  }
  ModelConfig config = find_synth_preset("tiny").config;
  Model model = synthesize_model(config, 4);
  XnnRuntime runtime{1};
  std::mt19937 rng;
  std::vector<int> tokens;
  CalibrationStats stats;
  QuantizeOptions options;
};

TEST_CASE("The W8A8 model's logits track FP32 and its greedy choices mostly agree") {
  testing::ScratchDir dir;
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 4);
  XnnRuntime runtime(1);
  Transformer fp32(model, runtime);
  // Calibrate on random token sequences.
  std::mt19937 rng(1);
  std::vector<std::vector<int>> sequences;
  for (int s = 0; s < 16; ++s) sequences.push_back(testing::random_tokens(rng, config.vocab_size, 64));
  const CalibrationStats stats = calibrate_on(model, runtime, sequences);

  const std::vector<int> probe = testing::random_tokens(rng, config.vocab_size, 41);
  const auto expected_span = fp32.forward(probe, 0, true);
  const std::vector<float> expected(expected_span.begin(), expected_span.end());
  for (bool per_channel : {false, true}) {
    CAPTURE(per_channel);
    QuantizeOptions options;
    options.method = ScaleMethodSpec::parse("minmax");
    options.per_channel = per_channel;
    const QuantizedLinears int8 = quantize_model(model, stats, options);
    CHECK(int8.size() == 15u);
    Transformer quantized(model, runtime, {}, &int8);
    const auto actual = quantized.forward(probe, 0, true);
    double error = 0, norm = 0;
    int agree = 0;
    for (size_t t = 0; t < probe.size(); ++t) {
      auto a = actual.subspan(t * config.vocab_size, config.vocab_size);
      auto e = std::span(expected).subspan(t * config.vocab_size, config.vocab_size);
      for (size_t v = 0; v < a.size(); ++v) {
        error += (a[v] - e[v]) * (a[v] - e[v]);
        norm += e[v] * e[v];
      }
      agree += std::max_element(a.begin(), a.end()) - a.begin() == std::max_element(e.begin(), e.end()) - e.begin();
    }
    CHECK(std::sqrt(error / norm) < 0.1);
    CHECK(agree >= static_cast<int>(probe.size() * 0.8));
  }
}

TEST_CASE("A dynamic INT8 linear layer equals its plain reference: per-token and per-block scales, exact integer sums") {
  for (const ActivationScales scales : {ActivationScales::kPerToken, ActivationScales::kPerBlock})
  for (const WeightGranularity granularity : {WeightGranularity::kPerTensor, WeightGranularity::kPerChannel, WeightGranularity::kPerGroup}) {
    for (const int threads : {1, 2}) {
      const bool per_block = scales == ActivationScales::kPerBlock, per_channel = granularity == WeightGranularity::kPerChannel;
      const bool per_group = granularity == WeightGranularity::kPerGroup;
      CAPTURE(per_block);
      CAPTURE(per_channel);
      CAPTURE(per_group);
      CAPTURE(threads);
      // Odd sizes (not a multiple of any vector width or of the 32-row tasks), tokens of very different
      // magnitudes, and an all-zero token.
      const int in = 97, out = 71, batch = 5;
      std::mt19937 rng(static_cast<unsigned>(per_channel * 2 + threads));
      std::normal_distribution<float> normal(0.0f, 1.0f);
      std::vector<float> weights(static_cast<size_t>(in) * out);
      for (size_t i = 0; i < weights.size(); ++i) weights[i] = 0.1f * normal(rng) * (1.0f + static_cast<float>(i / in % 7));
      const QuantizedMatrix matrix = quantize_weights(weights, out, in, granularity);
      if (per_group) CHECK(matrix.group_scales.size() == static_cast<size_t>(out) * 4);  // 97 inputs: groups of 32, 32, 32, 1
      std::vector<float> input(static_cast<size_t>(batch) * in);
      for (size_t i = 0; i < input.size(); ++i) input[i] = normal(rng) * (i / in == 1 ? 300.0f : 1.0f);
      std::fill(input.begin() + 3 * in, input.begin() + 4 * in, 0.0f);
      input[2 * in + 40] = 500.0f;  // an outlier channel: per-block scales confine it to its block
      XnnRuntime runtime(threads);
      LinearDynamicInt8 linear(matrix, "test", {}, scales);
      std::vector<float> output(static_cast<size_t>(batch) * out);
      linear.run(runtime, batch, input.data(), output.data());
      const std::vector<float> expected = reference_linear_dynamic_int8(matrix, input, batch, scales);
      // The block kernel adds the blocks' scaled sums in float: the double-precision reference to float
      // rounding of the products' total magnitude (the same sums over |x| and |w|); per token and per
      // row it is one INT32 sum scaled once.
      QuantizedMatrix absolute = matrix;
      for (int8_t& v : absolute.values) v = static_cast<int8_t>(std::abs(v));
      std::vector<float> absolute_input(input);
      for (float& v : absolute_input) v = std::fabs(v);
      const std::vector<float> magnitude = reference_linear_dynamic_int8(absolute, absolute_input, batch, scales);
      for (size_t i = 0; i < output.size(); ++i) {
        const float bound = per_block || per_group ? 1e-6f * magnitude[i] + 1e-6f
                                                   : 1e-6f * std::max(std::fabs(output[i]), std::fabs(expected[i]));
        CHECK(std::fabs(output[i] - expected[i]) <= bound);
      }
      for (int o = 0; o < out; ++o) CHECK(output[static_cast<size_t>(3 * out + o)] == 0.0f);
      // Each token alone gives what it gave in the batch: nothing depends on its neighbours.
      std::vector<float> alone(static_cast<size_t>(out));
      linear.run(runtime, 1, input.data() + in, alone.data());
      for (int o = 0; o < out; ++o) CHECK(alone[static_cast<size_t>(o)] == output[static_cast<size_t>(out + o)]);
    }
  }
}

TEST_CASE("Weights in groups of 32: activations per block at run time wherever they run, packaged as qgint8") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 4);
  QuantizeOptions grouped;
  grouped.per_group = true;
  const QuantizedLinears int8 = quantize_model_weights(model, grouped);
  REQUIRE(int8.at("layers.0.wq").weights.per_group());
  CHECK(int8.at("layers.0.wq").weights.group_scales.size() == 64u * 2);  // 64 rows, dim 64: two groups each
  // No static scales for them: an XNNPACK layer and statistics-based quantization refuse, by name.
  CHECK_THROWS_WITH_AS(LinearInt8(int8.at("layers.0.wq"), "layers.0.wq"), doctest::Contains("layers.0.wq: weights in groups"), Error);
  XnnRuntime runtime(1);
  std::mt19937 rng(2);
  const CalibrationStats stats = calibrate_on(model, runtime, {testing::random_tokens(rng, config.vocab_size, 16)});
  CHECK_THROWS_WITH_AS(quantize_model(model, stats, grouped), doctest::Contains("not static scales"), Error);

  const std::vector<int> tokens = testing::random_tokens(rng, config.vocab_size, 24);
  Transformer fp32(model, runtime);
  const auto a = fp32.forward(tokens, 0, true);
  const std::vector<float> expected(a.begin(), a.end());
  auto logits = [&](const QuantizedLinears& layers, TransformerOptions options) {
    Transformer quantized(model, runtime, options, &layers);
    const auto span = quantized.forward(tokens, 0, true);
    return std::vector<float>(span.begin(), span.end());
  };
  TransformerOptions blocks;
  blocks.activations = ActivationQuantization::kDynamicBlocks;
  const std::vector<float> fine = logits(int8, blocks);
  double error = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    error += (fine[i] - expected[i]) * (fine[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  CHECK(std::sqrt(error / norm) < 0.05);
  // Asked to run with static activations, grouped layers still quantize theirs per block at run time.
  CHECK(logits(int8, {}) == fine);
  // A package holds them (qgint8) and runs them the same, bit for bit.
  testing::ScratchDir dir;
  write_model_package(dir.path("g.pkg"), model, int8, {}, {});
  const ModelPackage package = read_model_package(dir.path("g.pkg"), nullptr);
  REQUIRE(package.int8.at("layers.1.w2").weights.per_group());
  CHECK(!package.int8.at("layers.1.w2").weights.group_scales.empty());
  CHECK(package.int8.at("layers.1.w2").weights.group_scales == int8.at("layers.1.w2").weights.group_scales);
  CHECK(logits(package.int8, {}) == fine);
}

TEST_CASE("Dynamic activations: no statistics, logits close to FP32, and prefill equals decode exactly") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 4);
  XnnRuntime runtime(1);
  Transformer fp32(model, runtime);
  std::mt19937 rng(3);
  const std::vector<int> probe = testing::random_tokens(rng, config.vocab_size, 41);
  const auto expected_span = fp32.forward(probe, 0, true);
  const std::vector<float> expected(expected_span.begin(), expected_span.end());
  QuantizeOptions options;
  options.per_channel = true;
  const QuantizedLinears int8 = quantize_model_weights(model, options);
  CHECK(int8.size() == 15u);
  TransformerOptions dynamic;
  dynamic.activations = ActivationQuantization::kDynamic;
  Transformer quantized(model, runtime, dynamic, &int8);
  const auto prefill_span = quantized.forward(probe, 0, true);
  const std::vector<float> prefill(prefill_span.begin(), prefill_span.end());
  double error = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    error += (prefill[i] - expected[i]) * (prefill[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  CHECK(std::sqrt(error / norm) < 0.05);
  // Token by token: the same logits bit for bit (a token's activation scale is its own).
  Transformer stepwise(model, runtime, dynamic, &int8);
  size_t different = 0;
  for (size_t t = 0; t < probe.size(); ++t) {
    const auto step = stepwise.forward(std::span(&probe[t], 1), static_cast<int>(t), false);
    for (int v = 0; v < config.vocab_size; ++v) different += step[static_cast<size_t>(v)] != prefill[t * config.vocab_size + v];
  }
  CHECK(different == 0);
}

TEST_CASE("Mixed precision to a target KL: the fewest layers in sensitivity order, and the target met") {
  const TinyWindow tiny(1);
  const auto& [config, model, runtime, rng, tokens, stats, options] = tiny;
  const std::vector<LayerSensitivity> ranking = measure_sensitivity(model, stats, options, tokens, runtime);

  const MixedPrecision loose = fewest_fallback_layers(model, stats, options, tokens, runtime, 10.0);
  CHECK(loose.layers.empty());
  REQUIRE(loose.tried.size() == 1);
  const double all_int8 = loose.tried[0];
  REQUIRE(all_int8 > 0.0);
  // Halfway to FP32: some layers, each choice in ranking order, the KL met only at the last one added.
  const MixedPrecision half = fewest_fallback_layers(model, stats, options, tokens, runtime, all_int8 / 2);
  REQUIRE_FALSE(half.layers.empty());
  CHECK(half.mean_kl <= all_int8 / 2);
  REQUIRE(half.tried.size() == half.layers.size() + 1);
  for (size_t k = 0; k + 1 < half.tried.size(); ++k) CHECK(half.tried[k] > all_int8 / 2);
  for (size_t k = 0; k < half.layers.size(); ++k) CHECK(half.layers[k] == ranking[k].name);
  // Zero: every linear in FP32 (the tied classifier takes the token table with it), exact.
  const MixedPrecision exact = fewest_fallback_layers(model, stats, options, tokens, runtime, 0.0);
  CHECK(exact.mean_kl == 0.0);

  // The same target with the fine-grained mode as the fallback: the layers taken out are quantized in
  // groups of 32 with no static scales, the rest stay static, and the model that runs is the one measured.
  const MixedPrecision fine = fewest_fallback_layers(model, stats, options, tokens, runtime, all_int8 / 2, LayerFallback::kFineGrained);
  REQUIRE_FALSE(fine.layers.empty());
  CHECK(fine.mean_kl <= all_int8 / 2);
  for (size_t k = 0; k < fine.layers.size(); ++k) CHECK(fine.layers[k] == ranking[k].name);
  QuantizeOptions mixed = options;
  mixed.fine_grained.insert(fine.layers.begin(), fine.layers.end());
  const QuantizedLinears int8 = quantize_model(model, stats, mixed);
  for (const auto& entry : int8) {
    const std::string& name = entry.first;  // (a named variable: clang 14 cannot capture structured bindings)
    CAPTURE(name);
    const bool chosen = std::find(fine.layers.begin(), fine.layers.end(), name) != fine.layers.end();
    CHECK(entry.second.weights.per_group() == chosen);
  }
  Transformer fp32(model, runtime), candidate(model, runtime, {}, &int8);
  const auto reference = fp32.forward(tokens, 0, true);
  const std::vector<float> reference_logits(reference.begin(), reference.end());
  const double kl = testing::mean_kl(reference_logits, candidate.forward(tokens, 0, true), config.vocab_size);
  CHECK(kl == doctest::Approx(fine.mean_kl).epsilon(1e-6));
  // Every layer fine-grained still differs from FP32: a target of 0 is refused, naming the mode.
  CHECK_THROWS_WITH(fewest_fallback_layers(model, stats, options, tokens, runtime, 0.0, LayerFallback::kFineGrained),
                    doctest::Contains("every linear layer fine-grained"));
}

TEST_CASE("Mixed 4/5/8 bits to a target KL: from 4 bits layers go to 5 bits in order, then on to fine-grained INT8") {
  TinyWindow tiny(2);
  tiny.options.weight_bits = 4;
  // Named references, not a structured binding: clang 14 cannot capture those in the lambdas below.
  const ModelConfig& config = tiny.config;
  const Model& model = tiny.model;
  const XnnRuntime& runtime = tiny.runtime;
  const std::vector<int>& tokens = tiny.tokens;
  const CalibrationStats& stats = tiny.stats;
  const QuantizeOptions& options = tiny.options;
  // Every layer in 4 bits, in 5 bits, fine-grained INT8: measured here without the search.
  const WindowKl window(model, tokens, runtime, 4);
  auto kl_of = [&](const QuantizeOptions& o) {
    const QuantizedLinears layers = quantize_model(model, stats, o);
    Transformer candidate(model, runtime, {}, &layers);
    return window.of(candidate);
  };
  QuantizeOptions five = options, fine = options;
  five.weight_bits = 5;
  for (const LinearSite& site : linear_sites(config)) fine.fine_grained.insert(site.name);
  const double all_four = kl_of(options), all_five = kl_of(five), all_fine = kl_of(fine);
  MESSAGE("KL with every linear in 4 bits " << all_four << ", 5 bits " << all_five << ", fine-grained INT8 " << all_fine);
  REQUIRE(all_five < all_four);
  REQUIRE(all_fine < all_five * 0.7);
  const std::vector<LayerSensitivity> ranking = [&] {
    std::vector<LayerSensitivity> r = measure_sensitivity(model, stats, options, tokens, runtime);
    std::erase_if(r, [](const LayerSensitivity& layer) { return layer.name.ends_with(".w2"); });  // 176 wide: INT8 already
    std::stable_sort(r.begin(), r.end(), [&](const auto& a, const auto& b) {
      return a.mean_kl / static_cast<double>(linear_weights(model, a.name).size()) >
             b.mean_kl / static_cast<double>(linear_weights(model, b.name).size());
    });
    return r;
  }();

  // Between 4 and 5 bits: layers in 5 bits in ranking order (KL per weight), none INT8.
  const double between = (all_four + all_five) / 2;
  const MixedPrecision some = fewest_fallback_layers(model, stats, options, tokens, runtime, between, LayerFallback::kFiveBit);
  REQUIRE_FALSE(some.layers.empty());
  CHECK(some.fine_grained_layers.empty());
  CHECK(some.mean_kl <= between);
  for (size_t k = 0; k < some.layers.size(); ++k) CHECK(some.layers[k] == ranking[k].name);
  QuantizeOptions chosen = options;
  chosen.five_bit.insert(some.layers.begin(), some.layers.end());
  CHECK(kl_of(chosen) == doctest::Approx(some.mean_kl).epsilon(1e-9));
  for (const auto& entry : quantize_model(model, stats, chosen)) {
    const bool five_bit = std::find(some.layers.begin(), some.layers.end(), entry.first) != some.layers.end();
    if (entry.first != "layers.0.w2" && entry.first != "layers.1.w2") CHECK(entry.second.weights.bits == (five_bit ? 5 : 4));
  }
  // Below every layer in 5 bits: all of them in 5 bits, then fine-grained INT8 in the same order.
  const double below = all_five * 0.7;
  const MixedPrecision deep = fewest_fallback_layers(model, stats, options, tokens, runtime, below, LayerFallback::kFiveBit);
  CHECK(deep.layers.size() == ranking.size());
  REQUIRE_FALSE(deep.fine_grained_layers.empty());
  CHECK(deep.mean_kl <= below);
  for (size_t k = 0; k < deep.fine_grained_layers.size(); ++k) CHECK(deep.fine_grained_layers[k] == ranking[k].name);
  QuantizeOptions applied = options;
  choose_mixed_precision(model, stats, applied, tokens, runtime, KlTarget{below, 1}, LayerFallback::kFiveBit);
  CHECK(applied.fine_grained.size() == deep.fine_grained_layers.size());
  CHECK(kl_of(applied) == doctest::Approx(deep.mean_kl).epsilon(1e-9));
  // Not even every layer fine-grained reaches 0: refused, naming both steps.
  CHECK_THROWS_WITH(fewest_fallback_layers(model, stats, options, tokens, runtime, 0.0, LayerFallback::kFiveBit),
                    doctest::Contains("every linear layer in 5 bits, then fine-grained"));
  CHECK(parse_fallback("5-bit") == LayerFallback::kFiveBit);
}

TEST_CASE("Target KL 'dynamic': the calibration-free baseline's KL on the window, measured independently, and met") {
  CHECK_FALSE(KlTarget::parse("dynamic").kl.has_value());
  CHECK(KlTarget::parse("0.001").kl.value() == 0.001);
  CHECK(KlTarget::parse("dynamic").to_string() == "dynamic");
  CHECK(KlTarget::parse("dynamic*0.8").factor == 0.8);
  CHECK(KlTarget::parse("dynamic*0.8").to_string() == "dynamic*0.8");
  for (const char* bad : {"", "fast", "0", "-0.1", "1e9", "nan", "0.001x", "dynamic*", "dynamic*2", "dynamic*0", "dynamic*x"}) {
    CAPTURE(bad);
    const std::string quoted = std::string("'") + bad + "'";
    CHECK_THROWS_WITH_AS(KlTarget::parse(bad), doctest::Contains(quoted.c_str()), Error);
  }
  CHECK(parse_fallback("fine-grained") == LayerFallback::kFineGrained);
  CHECK_THROWS_WITH_AS(parse_fallback("int4"), doctest::Contains("'int4'"), Error);

  TinyWindow tiny(3);
  tiny.options.per_channel = true;
  const auto& [config, model, runtime, rng, tokens, stats, options] = tiny;
  // The baseline by hand: per-channel weights, per-token activations, against FP32 on the same tokens.
  const QuantizedLinears weights = quantize_model_weights(model, options);
  Transformer fp32(model, runtime), dynamic(model, runtime, {.activations = ActivationQuantization::kDynamic}, &weights);
  const auto reference = fp32.forward(tokens, 0, true);
  const std::vector<float> reference_logits(reference.begin(), reference.end());
  const double by_hand = testing::mean_kl(reference_logits, dynamic.forward(tokens, 0, true), config.vocab_size);
  REQUIRE(by_hand > 0.0);
  CHECK(dynamic_baseline_kl(model, options, tokens, runtime) == doctest::Approx(by_hand).epsilon(1e-6));

  // Static minmax is worse than dynamic on this model, so reaching the baseline takes layers out, and
  // the options come back holding them.
  QuantizeOptions mixed = options;
  const MixedPrecisionChoice choice =
      choose_mixed_precision(model, stats, mixed, tokens, runtime, KlTarget::parse("dynamic"), LayerFallback::kFineGrained);
  CHECK(choice.target_kl == doctest::Approx(by_hand).epsilon(1e-6));
  REQUIRE(choice.mixed.tried.front() > by_hand);
  CHECK(choice.mixed.mean_kl <= choice.target_kl);
  CHECK(mixed.fine_grained == std::set<std::string>(choice.mixed.layers.begin(), choice.mixed.layers.end()));
  CHECK(mixed.keep_fp32.empty());
  // With a baseline model (a smoothed model's original), "dynamic" is that model's dynamic KL.
  const Model other = synthesize_model(config, 5);
  QuantizeOptions against_other = options;
  const double other_kl = dynamic_baseline_kl(other, options, tokens, runtime);
  REQUIRE(other_kl != doctest::Approx(by_hand));
  CHECK(choose_mixed_precision(model, stats, against_other, tokens, runtime, KlTarget::parse("dynamic"), LayerFallback::kFineGrained, &other)
            .target_kl == other_kl);
  QuantizeOptions with_margin = options;
  CHECK(choose_mixed_precision(model, stats, with_margin, tokens, runtime, KlTarget::parse("dynamic*0.9"), LayerFallback::kFineGrained)
            .target_kl == doctest::Approx(0.9 * by_hand).epsilon(1e-6));
}

TEST_CASE("Per-point clipping search: never worse on its windows, and the choice it reports is the model it measured") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 4);
  XnnRuntime runtime(1);
  std::mt19937 rng(2);
  const std::vector<int> tokens = testing::random_tokens(rng, config.vocab_size, 64);
  const CalibrationStats stats = calibrate_on(model, runtime, {tokens, testing::random_tokens(rng, config.vocab_size, 64)});
  QuantizeOptions options;
  options.method = ScaleMethodSpec::parse("percentile:99.9");
  options.per_channel = true;
  const std::vector<ScaleMethodSpec> candidates = {ScaleMethodSpec::parse("minmax"), ScaleMethodSpec::parse("mse")};
  const ClippingChoice choice = choose_clipping(model, stats, options, tokens, runtime, candidates);
  CHECK(choice.kl_after <= choice.kl_before);
  for (const auto& entry : choice.point_methods) {
    const int point = entry.first;
    CAPTURE(point);
    CHECK(entry.second.to_string() != options.method.to_string());
  }
  // The reported KL is the one of the package quantized with the chosen methods.
  QuantizeOptions chosen = options;
  chosen.point_methods = choice.point_methods;
  const MixedPrecision measured = fewest_fallback_layers(model, stats, chosen, tokens, runtime, 10.0);  // 10: no layer taken out
  CHECK(measured.mean_kl == doctest::Approx(choice.kl_after).epsilon(1e-9));
  // A point's method does change its scale: minmax at the first attention input against percentile:99.9.
  QuantizeOptions one = options;
  one.point_methods[layer_point(0, LayerPoint::kAttnIn)] = ScaleMethodSpec::parse("minmax");
  CHECK(quantize_model(model, stats, one).at("layers.0.wq").input.scale > quantize_model(model, stats, options).at("layers.0.wq").input.scale);
}

}  // namespace
}  // namespace fedcal
