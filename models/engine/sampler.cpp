#include "models/engine/sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "common/error.h"
#include "models/engine/vector_math.h"

namespace fedcal {

Sampler::Sampler(SamplerOptions options) : options_(options), rng_(options.seed) {
  if (!(options_.temperature >= 0.0f) || !std::isfinite(options_.temperature))
    fail("temperature {} must be >= 0", options_.temperature);
  if (!(options_.top_p > 0.0f && options_.top_p <= 1.0f)) fail("top-p {} must be in (0, 1]", options_.top_p);
}

int Sampler::sample(std::span<const float> logits) {
  if (options_.temperature == 0.0f) return argmax(logits);
  const int n = static_cast<int>(logits.size());
  probabilities_.resize(n);
  for (int i = 0; i < n; ++i) probabilities_[i] = logits[i] / options_.temperature;
  softmax(probabilities_.data(), n);
  // A uniform draw in [0, 1) from the top 24 bits, so the sequence is the same on every platform.
  const float draw = static_cast<float>(rng_() >> 40) * 0x1p-24f;

  order_.resize(n);
  std::iota(order_.begin(), order_.end(), 0);
  int candidates = n;
  float total = 1.0f;
  if (options_.top_p < 1.0f) {
    std::sort(order_.begin(), order_.end(), [&](int a, int b) {
      return probabilities_[a] != probabilities_[b] ? probabilities_[a] > probabilities_[b] : a < b;
    });
    float cumulative = 0.0f;
    for (candidates = 0; candidates < n;) {
      cumulative += probabilities_[order_[candidates++]];
      if (cumulative >= options_.top_p) break;
    }
    total = cumulative;
  }
  float cumulative = 0.0f;
  for (int i = 0; i < candidates; ++i) {
    cumulative += probabilities_[order_[i]];
    if (draw * total < cumulative) return order_[i];
  }
  return order_[candidates - 1];
}

}  // namespace fedcal
