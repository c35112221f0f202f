// CLI11 transformers for options with a unit: they turn what was typed into the number the option
// holds, or make CLI11 refuse it as a usage error (exit 2) that names the option and the forms it takes.
#pragma once

#include <CLI/CLI.hpp>

#include <string>

#include "common/units.h"

namespace fedcal::coordinator {

// "90%" or "90" -> "90" (0..100).
inline CLI::Validator percentage() {
  return CLI::Validator(
      [](std::string& input) -> std::string {
        const auto value = parse_percent(input);
        if (!value) return "'" + input + "' is not a percentage from 0 to 100 (e.g. 90%)";
        input = std::to_string(*value);
        return {};
      },
      "PERCENT");
}

// "30s", "10min", "1h", "500ms" or milliseconds -> milliseconds, within [min_ms, max_ms].
inline CLI::Validator duration_ms(int64_t min_ms, int64_t max_ms) {
  return CLI::Validator(
      [min_ms, max_ms](std::string& input) -> std::string {
        const auto value = parse_duration_ms(input);
        if (!value) return "'" + input + "' is not a duration (e.g. 500ms, 30s, 10min, 1h; a bare number is milliseconds)";
        if (*value < min_ms || *value > max_ms)
          return "'" + input + "' is outside " + std::to_string(min_ms) + ".." + std::to_string(max_ms) + " ms";
        input = std::to_string(*value);
        return {};
      },
      "DURATION");
}

}  // namespace fedcal::coordinator
