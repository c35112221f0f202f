// Speeds that agents measure swing from run to run, most of all on devices that share their cores: a
// figure whose run-to-run spread ((max - min) / median of the runs) is above kNoisySpread is not a
// measurement, and the report, the status page and the rollout listing say "noisy (+-N%)" instead
// of a number. JSON keeps the number, with a `..._noisy` flag beside it.
#pragma once

#include <string>

namespace fedcal::coordinator {

constexpr double kNoisySpread = 0.5;  // +-25% around the median

inline bool is_noisy(double spread) { return !(spread <= kNoisySpread); }  // NaN: noisy

// "412 (+-4%)" or "noisy (+-209%)"; `value` printed with `decimals` decimals and `unit` after it.
std::string speed_figure(double value, double spread, int decimals = 0, const std::string& unit = "");

}  // namespace fedcal::coordinator
