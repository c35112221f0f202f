#include "common/units.h"

#include <doctest/doctest.h>

namespace fedcal {
namespace {

TEST_CASE("Units: percentages and durations as typed on a command line") {
  CHECK(parse_percent("90%") == 90.0);
  CHECK(parse_percent("12.5") == 12.5);
  CHECK(parse_percent("0%") == 0.0);
  for (const char* bad : {"", "%", "abc", "101%", "-1%", "50%%", "50 %", "nan", "inf%"}) CHECK_FALSE(parse_percent(bad));
  CHECK(parse_duration_ms("250") == 250);
  CHECK(parse_duration_ms("250ms") == 250);
  CHECK(parse_duration_ms("30s") == 30000);
  CHECK(parse_duration_ms("2min") == 120000);
  CHECK(parse_duration_ms("2m") == 120000);
  CHECK(parse_duration_ms("1.5h") == 5400000);
  CHECK(parse_duration_ms("1d") == 86400000);
  for (const char* bad : {"", "s", "30x", "-1s", "30 s", "1e30", "366d", "nan"}) CHECK_FALSE(parse_duration_ms(bad));
}

}  // namespace
}  // namespace fedcal
