// Repeated measurements (speeds, mostly) summed up as their median and range: a single run, or a
// mean, swings with whatever else the machine was doing; the median of several does less, and the
// range says how much it swung.
#pragma once

#include <vector>

namespace fedcal {

struct Spread {
  double median = 0;
  double low = 0;   // the smallest sample
  double high = 0;  // the largest
  int samples = 0;
  // (high - low) / median: 0.05 is "within 5%"; 0 without samples.
  double relative() const { return median > 0 ? (high - low) / median : 0; }
};

// Of `samples` (any order; the median of an even count is the mean of the middle two).
Spread spread_of(std::vector<double> samples);

}  // namespace fedcal
