// Sliding-window perplexity and KL against a brute-force computation from the scalar reference.
#include <doctest/doctest.h>

#include <cmath>
#include <random>

#include "common/error.h"
#include "models/engine/evaluation.h"
#include "models/format/synth.h"
#include "tests/models/engine/reference_transformer.h"

namespace fedcal {
namespace {

double log_softmax_at(const std::vector<double>& logits, int index) {
  double max = logits[0];
  for (double v : logits) max = std::max(max, v);
  double sum = 0;
  for (double v : logits) sum += std::exp(v - max);
  return logits[index] - max - std::log(sum);
}

TEST_CASE("Perplexity over sliding windows equals the brute-force value and every token after the first is scored once") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 21);
  std::mt19937 rng(5);
  std::vector<int> tokens{1};
  for (int i = 0; i < 99; ++i) tokens.push_back(static_cast<int>(rng() % config.vocab_size));
  const int context = 32, stride = 8;

  // Target i is scored by the first window [kS, kS + C) that contains it, with the window's tokens as context.
  double nll = 0;
  const int n = static_cast<int>(tokens.size());
  for (int i = 1; i < n; ++i) {
    const int k = std::max(0, (i - context + 1 + stride - 1) / stride);
    const int begin = k * stride;
    std::vector<int> window(tokens.begin() + begin, tokens.begin() + std::min(n, begin + context));
    const auto logits = testing::reference_logits(model, window);
    nll -= log_softmax_at(logits[i - 1 - begin], tokens[i]);
  }

  XnnRuntime runtime(1);
  Transformer transformer(model, runtime);
  EvalOptions options;
  options.context = context;
  options.stride = stride;
  const EvalResult result = evaluate(transformer, nullptr, tokens, 1000, options);
  CHECK(result.tokens == n - 1);
  CHECK(result.perplexity == doctest::Approx(std::exp(nll / (n - 1))).epsilon(1e-5));
  CHECK(result.bits_per_byte == doctest::Approx(nll / std::log(2.0) / 1000).epsilon(1e-5));
  CHECK_FALSE(result.reference.has_value());
}

TEST_CASE("KL divergence and top-1 agreement: zero and one against itself, positive against another model") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 21);
  Model perturbed = model;
  std::mt19937 rng(9);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  for (float& w : perturbed.layers[0].w2) w += noise(rng);
  std::vector<int> tokens{1};
  for (int i = 0; i < 60; ++i) tokens.push_back(static_cast<int>(rng() % config.vocab_size));

  XnnRuntime runtime(1);
  Transformer a(model, runtime), same(model, runtime), other(perturbed, runtime);
  const EvalResult self = evaluate(a, &same, tokens, 100);
  REQUIRE(self.reference.has_value());
  CHECK(self.reference->mean_kl == doctest::Approx(0.0));
  CHECK(self.reference->max_kl == doctest::Approx(0.0));
  CHECK(self.reference->top1_agreement == 1.0);
  CHECK(self.reference->reference_perplexity == doctest::Approx(self.perplexity));

  const EvalResult versus = evaluate(a, &other, tokens, 100);
  CHECK(versus.reference->mean_kl > 1e-5);
  CHECK(versus.reference->max_kl >= versus.reference->mean_kl);
  CHECK(versus.reference->top1_agreement <= 1.0);
  CHECK(versus.reference->reference_perplexity != doctest::Approx(versus.perplexity).epsilon(1e-9));
}

TEST_CASE("Several models in one pass against one reference: each result equals its own pass, bit for bit") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 21);
  Model perturbed = model;
  std::mt19937 rng(13);
  std::normal_distribution<float> noise(0.0f, 0.05f);
  for (float& w : perturbed.layers[0].wq) w += noise(rng);
  std::vector<int> tokens{1};
  for (int i = 0; i < 90; ++i) tokens.push_back(static_cast<int>(rng() % config.vocab_size));
  XnnRuntime runtime(1);
  Transformer reference(model, runtime), a(perturbed, runtime), b(model, runtime);
  EvalOptions options;
  options.context = 32;
  options.stride = 8;
  Transformer* const both[] = {&a, &b};
  const std::vector<EvalResult> together = evaluate(both, &reference, tokens, 300, options);
  REQUIRE(together.size() == 2);
  for (size_t m = 0; m < 2; ++m) {
    const EvalResult alone = evaluate(*both[m], &reference, tokens, 300, options);
    CHECK(together[m].tokens == alone.tokens);
    CHECK(together[m].mean_nll == alone.mean_nll);
    CHECK(together[m].bits_per_byte == alone.bits_per_byte);
    CHECK(together[m].reference->mean_kl == alone.reference->mean_kl);
    CHECK(together[m].reference->max_kl == alone.reference->max_kl);
    CHECK(together[m].reference->top1_agreement == alone.reference->top1_agreement);
    CHECK(together[m].reference->reference_perplexity == alone.reference->reference_perplexity);
  }
  CHECK(together[0].reference->mean_kl > 1e-6);  // the perturbed one differs, the copy does not
  CHECK(together[1].reference->mean_kl == 0.0);
  CHECK_THROWS_WITH_AS(evaluate(std::span<Transformer* const>(), &reference, tokens, 300), doctest::Contains("no model"), Error);
}

}  // namespace
}  // namespace fedcal
