#include "common/clock.h"

#include <fmt/chrono.h>

#include <ctime>

namespace fedcal {

std::string format_utc_time(int64_t wall_ms) {
  const auto seconds = static_cast<std::time_t>(wall_ms / 1000);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}.{:03d}Z", fmt::gmtime(seconds), static_cast<int>(wall_ms % 1000));
}

}  // namespace fedcal
