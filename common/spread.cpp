#include "common/spread.h"

#include <algorithm>

namespace fedcal {

Spread spread_of(std::vector<double> samples) {
  Spread spread;
  if (samples.empty()) return spread;
  std::sort(samples.begin(), samples.end());
  const size_t n = samples.size();
  spread.samples = static_cast<int>(n);
  spread.median = n % 2 == 1 ? samples[n / 2] : (samples[n / 2 - 1] + samples[n / 2]) / 2;
  spread.low = samples.front();
  spread.high = samples.back();
  return spread;
}

}  // namespace fedcal
