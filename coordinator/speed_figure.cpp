#include "coordinator/speed_figure.h"

#include <fmt/format.h>

namespace fedcal::coordinator {

std::string speed_figure(double value, double spread, int decimals, const std::string& unit) {
  if (is_noisy(spread)) return fmt::format("noisy (+-{:.0f}%)", 50 * spread);
  return fmt::format("{:.{}f}{} (+-{:.0f}%)", value, decimals, unit, 50 * spread);
}

}  // namespace fedcal::coordinator
