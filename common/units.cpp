#include "common/units.h"

#include <charconv>
#include <cmath>
#include <utility>

namespace fedcal {
namespace {

// The number at the start of `text` and what follows it.
std::optional<std::pair<double, std::string_view>> leading_number(std::string_view text) {
  double value = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (text.empty() || error != std::errc() || !std::isfinite(value)) return std::nullopt;
  return std::pair{value, text.substr(static_cast<size_t>(end - text.data()))};
}

}  // namespace

std::optional<double> parse_percent(std::string_view text) {
  const auto number = leading_number(text);
  if (!number || !(number->second.empty() || number->second == "%")) return std::nullopt;
  if (!(number->first >= 0 && number->first <= 100)) return std::nullopt;
  return number->first;
}

std::optional<int64_t> parse_duration_ms(std::string_view text) {
  const auto number = leading_number(text);
  if (!number || number->first < 0) return std::nullopt;
  const std::string_view unit = number->second;
  double ms_per_unit = 0;
  if (unit.empty() || unit == "ms") ms_per_unit = 1;
  else if (unit == "s") ms_per_unit = 1000;
  else if (unit == "m" || unit == "min") ms_per_unit = 60e3;
  else if (unit == "h") ms_per_unit = 3600e3;
  else if (unit == "d") ms_per_unit = 86400e3;
  else return std::nullopt;
  const double ms = number->first * ms_per_unit;
  if (ms > 365 * 86400e3) return std::nullopt;
  return static_cast<int64_t>(std::llround(ms));
}

}  // namespace fedcal
