// The project's own model (models/tinystories-1.8m) reproduces the held-out perplexity its
// metrics.json (and MODEL_CARD.md) state. CTest label "slow".
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "models/engine/evaluation.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"
#include "models/quant/smoothing.h"
#include "tests/test_support.h"

#include <filesystem>
#include <memory>

namespace fedcal {
namespace {

const std::string kModelDir = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";

// Scores the whole held-out split: 16 s in the optimized build, minutes under the sanitizers, so this
// file is the "slow" test binary: the sanitizer run of tests/run_all.sh skips its label.
TEST_CASE("Project model: held-out perplexity in the C++ engine equals the model card's (to 0.5%)" * doctest::timeout(600)) {
  const nlohmann::json metrics = nlohmann::json::parse(read_text_file(kModelDir + "/metrics.json"));
  LoadedModel loaded = load_model(kModelDir + "/model.bin");
  auto tokenizer = load_tokenizer(loaded, kModelDir + "/tokenizer.bin");
  const std::string heldout = testing::tinystories_heldout();
  XnnRuntime runtime(1);  // one core: the slow tests run beside the fleet tests (tests/doctest_tests.cmake)
  Transformer transformer(loaded.model, runtime);
  const EvalResult result = evaluate(transformer, nullptr, tokenizer->encode(heldout, true), heldout.size());
  CHECK(result.tokens == metrics["heldout_tokens_scored"].get<int64_t>());
  CHECK(result.perplexity == doctest::Approx(metrics["heldout_perplexity"].get<double>()).epsilon(0.005));
  CHECK(result.bits_per_byte == doctest::Approx(metrics["heldout_bits_per_byte"].get<double>()).epsilon(0.005));
}

// The fine-grained mode (activations quantized per block of 32 channels of each token at run time;
// every linear and the token table INT8) against FP32 on the whole held-out split, next to the
// per-token dynamic baseline. Measured with per-channel weights: 0.000238 mean KL and 0.98998 top-1
// agreement against 0.000619 and 0.98465 per token; with weights in groups of 32 too (llama.cpp Q8_0's
// layout, binary16 group scales): 0.000193 and 0.99145 (docs/QUANTIZATION.md).
TEST_CASE("Project model: the fine-grained mode reaches llama.cpp Q8_0's fidelity (KL <= 0.0003, top-1 >= 0.99)" *
          doctest::timeout(600)) {
  LoadedModel loaded = load_model(kModelDir + "/model.bin");
  auto tokenizer = load_tokenizer(loaded, kModelDir + "/tokenizer.bin");
  const std::string heldout = testing::tinystories_heldout();
  const std::vector<int> tokens = tokenizer->encode(heldout, true);
  XnnRuntime runtime(1);  // one core: the slow tests run beside the fleet tests (tests/doctest_tests.cmake)
  Transformer fp32(loaded.model, runtime);
  QuantizeOptions per_channel, per_group;
  per_channel.per_channel = true;
  per_group.per_group = true;
  const QuantizedLinears int8 = quantize_model_weights(loaded.model, per_channel);
  const QuantizedLinears grouped = quantize_model_weights(loaded.model, per_group);
  // The three against FP32 in one pass over the held-out split (FP32 run once).
  auto with = [&](ActivationQuantization activations, const QuantizedLinears& layers) {
    TransformerOptions options;
    options.activations = activations;
    return std::make_unique<Transformer>(loaded.model, runtime, options, &layers);
  };
  const auto per_token_model = with(ActivationQuantization::kDynamic, int8),
             blocks_model = with(ActivationQuantization::kDynamicBlocks, int8),
             fine_model = with(ActivationQuantization::kDynamicBlocks, grouped);
  Transformer* const models[] = {per_token_model.get(), blocks_model.get(), fine_model.get()};
  const std::vector<EvalResult> results = evaluate(models, &fp32, tokens, heldout.size());
  for (const EvalResult& result : results) REQUIRE(result.reference);
  const ReferenceComparison per_token = *results[0].reference, blocks = *results[1].reference, fine = *results[2].reference;
  MESSAGE("per token: KL " << per_token.mean_kl << ", top-1 " << per_token.top1_agreement << "; blocks of 32: KL " << blocks.mean_kl
                           << ", top-1 " << blocks.top1_agreement << "; and weight groups: KL " << fine.mean_kl << ", top-1 "
                           << fine.top1_agreement);
  CHECK(blocks.mean_kl <= 0.0003);
  CHECK(blocks.mean_kl < 0.5 * per_token.mean_kl);
  CHECK(blocks.top1_agreement > per_token.top1_agreement);
  CHECK(fine.mean_kl <= 0.0003);
  CHECK(fine.mean_kl < blocks.mean_kl);
  CHECK(fine.top1_agreement >= 0.99);
}

// Static INT8 against the calibration-free baseline (issue #13), the flow of bench/fidelity_table.sh:
// calibrate with importance sums on the training split (its first 2,000 lines), smooth (SmoothQuant, per-site strength by
// measured error on the first 4,000 bytes), calibrate the smoothed model, quantize it (mse, per-channel
// weights) with the fewest sensitive layers in the fine-grained mode that bring the KL on those 4,000
// bytes down to the dynamic baseline's, then measure both against FP32 on the whole held-out split.
struct StaticVsDynamic {
  ReferenceComparison dynamic, mixed;
  double perplexity_change = 0;  // of the mixed model, relative
  double package_share = 0;      // its package bytes / the FP32 package's
  size_t fine_grained_layers = 0, smoothed_sites = 0;
};

StaticVsDynamic static_vs_dynamic(const std::string& model_dir) {
  LoadedModel loaded = load_model(model_dir + "/model.bin");
  auto tokenizer = load_tokenizer(loaded, model_dir + "/tokenizer.bin");
  const PackageTokenizer package_tokenizer = find_tokenizer(loaded, model_dir + "/tokenizer.bin").file;
  const std::string train = testing::tinystories_train(), heldout = testing::tinystories_heldout();
  const std::string sensitivity_text = train.substr(0, 4000);
  const std::vector<int> heldout_tokens = tokenizer->encode(heldout, true), sensitivity = tokenizer->encode(sensitivity_text, true);
  XnnRuntime runtime(1);  // one core: the slow tests run beside the fleet tests (tests/doctest_tests.cmake)
  CalibrationOptions calibration;
  // The first 2,000 of the training split's 7,003 lines: calibrating on all of them (the bench's
  // flow, bench/fidelity_table.sh) took 20 of this test's 35 s for the second model, and measured no
  // better here (project model: KL 0.000503 / top-1 0.98571 on all lines, 0.000550 / 0.98585 on
  // 1,750, 0.000498 / 0.98636 on 3,500).
  calibration.sequences = 2000;
  calibration.importance = true;
  auto calibrate_model = [&](const Model& model) {
    Transformer transformer(model, runtime);
    return calibrate(transformer, *tokenizer, train, model_fingerprint(model), calibration);
  };
  const CalibrationStats importance = calibrate_model(loaded.model);
  Model smoothed = loaded.model;
  StaticVsDynamic result;
  for (const SiteSmoothing& site : smooth_model(smoothed, importance, sensitivity, runtime)) result.smoothed_sites += site.alpha.has_value();
  calibration.importance = false;
  const CalibrationStats stats = calibrate_model(smoothed);

  Transformer fp32(loaded.model, runtime);
  QuantizeOptions options;
  options.method = ScaleMethodSpec::parse("mse");
  options.per_channel = true;
  const QuantizedLinears weights = quantize_model_weights(loaded.model, options);
  Transformer dynamic(loaded.model, runtime, {.activations = ActivationQuantization::kDynamic}, &weights);
  // The target: 0.8x the original model's dynamic KL on the sensitivity text (--target-kl dynamic*0.8
  // --baseline-model): met there exactly, it lands at about 1.05x on the held-out text.
  const MixedPrecisionChoice choice = choose_mixed_precision(smoothed, stats, options, sensitivity, runtime, KlTarget::parse("dynamic*0.8"),
                                                             LayerFallback::kFineGrained, &loaded.model);
  result.fine_grained_layers = choice.mixed.layers.size();
  const QuantizedLinears mixed_layers = quantize_model(smoothed, stats, options);
  Transformer mixed(smoothed, runtime, {}, &mixed_layers);

  Transformer* const models[] = {&dynamic, &mixed};  // in one pass: FP32 runs once
  const std::vector<EvalResult> evals = evaluate(models, &fp32, heldout_tokens, heldout.size());
  result.dynamic = *evals[0].reference;
  const EvalResult& mixed_eval = evals[1];
  result.mixed = *mixed_eval.reference;
  result.perplexity_change = mixed_eval.perplexity / result.mixed.reference_perplexity - 1;
  testing::ScratchDir dir;
  write_model_package(dir.path("fp32.pkg"), loaded.model, {}, package_tokenizer, {});
  write_model_package(dir.path("mixed.pkg"), smoothed, mixed_layers, package_tokenizer, quantization_provenance(options, stats));
  result.package_share = static_cast<double>(std::filesystem::file_size(dir.path("mixed.pkg"))) /
                         static_cast<double>(std::filesystem::file_size(dir.path("fp32.pkg")));
  MESSAGE(model_dir << ": dynamic KL " << result.dynamic.mean_kl << ", top-1 " << result.dynamic.top1_agreement << "; static, "
                    << result.smoothed_sites << " sites smoothed, " << result.fine_grained_layers << " layers fine-grained: KL "
                    << result.mixed.mean_kl << ", top-1 " << result.mixed.top1_agreement << ", perplexity "
                    << 100 * result.perplexity_change << "%, package " << 100 * result.package_share << "% of FP32");
  return result;
}

// Two calibrations over 2,000 training lines and three model passes over the held-out split (the
// dynamic and mixed models beside one FP32 pass): 46 s alone on one core of the 2-core AMD EPYC VM
// (64 s with the whole split and FP32 run twice).
TEST_CASE("Project model: smoothed static INT8 with its sensitive layers fine-grained beats the dynamic baseline at <= 30% of the bytes" *
          doctest::timeout(1500)) {
  const StaticVsDynamic r = static_vs_dynamic(kModelDir);
  CHECK(r.smoothed_sites > 0);
  CHECK(r.mixed.mean_kl <= 1.1 * r.dynamic.mean_kl);
  CHECK(r.mixed.mean_kl <= 0.001);
  CHECK(r.mixed.top1_agreement >= 0.985);
  CHECK(r.mixed.top1_agreement >= r.dynamic.top1_agreement);  // (the dynamic baseline's own is 0.9847, below 0.985)
  CHECK(r.perplexity_change <= 0.002);
  CHECK(r.package_share <= 0.30);
}

TEST_CASE("Second model (trained apart, not tuned on): the same flow is at least as faithful as the dynamic baseline" *
          doctest::timeout(1500)) {
  const StaticVsDynamic r = static_vs_dynamic(std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-mha-0.7m");
  CHECK(r.mixed.mean_kl <= 1.1 * r.dynamic.mean_kl);
  CHECK(r.package_share <= 0.30);
}

}  // namespace
}  // namespace fedcal
