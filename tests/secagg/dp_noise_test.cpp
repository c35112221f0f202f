#include "secagg/dp_noise.h"

#include <doctest/doctest.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace fedcal {
namespace {

TEST_CASE("Skellam noise: integer, zero-mean, the requested variance, and it sums modulo 2^64") {
  std::vector<uint64_t> values(200000, 1000);
  add_skellam_noise(values, 20.0);
  double sum = 0, squares = 0;
  for (uint64_t value : values) {
    const double noise = static_cast<double>(static_cast<int64_t>(value - 1000));
    sum += noise;
    squares += noise * noise;
  }
  const double n = static_cast<double>(values.size());
  CHECK(std::abs(sum / n) < 0.3);                      // mean 0 (standard error 20 / sqrt(2e5) = 0.045)
  CHECK(std::abs(std::sqrt(squares / n) - 20) < 0.3);  // stddev 20
}

}  // namespace
}  // namespace fedcal
