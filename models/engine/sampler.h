// Picks the next token from logits: greedy at temperature 0, else softmax sampling with optional top-p.
#pragma once

#include <cstdint>
#include <random>
#include <span>
#include <vector>

namespace fedcal {

struct SamplerOptions {
  float temperature = 0.0f;  // 0: argmax
  float top_p = 1.0f;        // nucleus sampling threshold in (0, 1]
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(SamplerOptions options);
  int sample(std::span<const float> logits);

 private:
  SamplerOptions options_;
  std::mt19937_64 rng_;
  std::vector<float> probabilities_;
  std::vector<int> order_;
};

}  // namespace fedcal
