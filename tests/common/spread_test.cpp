#include "common/spread.h"

#include <doctest/doctest.h>

namespace fedcal {
namespace {

TEST_CASE("Spread: median and range of repeated measurements, any order") {
  const Spread odd = spread_of({30, 10, 1000, 20, 25});
  CHECK(odd.median == 25);
  CHECK(odd.low == 10);
  CHECK(odd.high == 1000);
  CHECK(odd.samples == 5);
  CHECK(odd.relative() == doctest::Approx(990.0 / 25));
  const Spread even = spread_of({4, 1, 3, 2});
  CHECK(even.median == 2.5);
  CHECK(spread_of({7}).relative() == 0);
  CHECK(spread_of({}).samples == 0);
  CHECK(spread_of({}).relative() == 0);
}

}  // namespace
}  // namespace fedcal
