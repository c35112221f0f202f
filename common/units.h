// Values with a unit as people type them on a command line: "90%", "30s", "10min". Each returns
// nullopt for anything else, so the caller can say which option it was.
#pragma once

#include <cstdint>
#include <optional>
#include <string_view>

namespace fedcal {

// "50%" or "50" -> 50; within [0, 100].
std::optional<double> parse_percent(std::string_view text);

// A non-negative duration in milliseconds: a number with a unit - ms, s, min (or m), h, d - or a
// bare number of milliseconds. "30s" -> 30000, "1.5h" -> 5400000, "250" -> 250. At most 365 days.
std::optional<int64_t> parse_duration_ms(std::string_view text);

}  // namespace fedcal
