// Fuzzes the calibration statistics parser; whatever it accepts must be self-consistent.
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "common/error.h"
#include "models/quant/calibration_stats.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    const fedcal::CalibrationStats stats = fedcal::parse_stats({reinterpret_cast<const std::byte*>(data), size}, "fuzz.stats");
    if (stats.counts.size() != stats.points.size() * stats.layout.counts_per_point()) std::abort();
    for (size_t i = 0; i < stats.points.size(); ++i) fedcal::summarize_histogram(stats.layout, stats.point(i));
  } catch (const fedcal::Error&) {
  }
  return 0;
}
