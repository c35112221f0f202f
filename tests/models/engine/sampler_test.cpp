#include <doctest/doctest.h>

#include <vector>

#include "common/error.h"
#include "models/engine/sampler.h"

namespace fedcal {
namespace {

TEST_CASE("Sampler: temperature 0 is argmax, sampling follows the distribution and the seed fixes the sequence") {
  const std::vector<float> logits{0.0f, 2.0f, 1.0f, -1.0f};
  Sampler greedy({0.0f, 1.0f, 1});
  CHECK(greedy.sample(logits) == 1);

  Sampler sampler({1.0f, 1.0f, 7});
  std::vector<int> counts(4, 0);
  const int draws = 20000;
  for (int i = 0; i < draws; ++i) ++counts[sampler.sample(logits)];
  // softmax(0, 2, 1, -1) = 0.0871, 0.6439, 0.2369, 0.0321
  CHECK(counts[1] / double(draws) == doctest::Approx(0.6439).epsilon(0.03));
  CHECK(counts[2] / double(draws) == doctest::Approx(0.2369).epsilon(0.05));
  CHECK(counts[3] / double(draws) == doctest::Approx(0.0321).epsilon(0.15));

  // top-p 0.7 keeps tokens 1 and 2 only.
  Sampler nucleus({1.0f, 0.7f, 3});
  for (int i = 0; i < 2000; ++i) {
    const int token = nucleus.sample(logits);
    REQUIRE((token == 1 || token == 2));
  }

  Sampler a({0.8f, 0.9f, 42}), b({0.8f, 0.9f, 42});
  for (int i = 0; i < 100; ++i) REQUIRE(a.sample(logits) == b.sample(logits));
  CHECK_THROWS_AS(Sampler({-1.0f, 1.0f, 0}), Error);
  CHECK_THROWS_AS(Sampler({1.0f, 0.0f, 0}), Error);
}

}  // namespace
}  // namespace fedcal
