// The calibration statistics sketch: per quantization point, a log-linear histogram of activation
// magnitudes per sign, in integer counts so that the statistics of shards merge by plain addition
// (which is all secure aggregation can do).
//
// Bucket of a finite non-zero |x|: its binary exponent e and the top `mantissa_bits` bits m of its
// mantissa, read straight from the float's bits: index = (e - min_exponent) * 2^mantissa_bits + m.
// Each bucket [2^e (1 + m/2^b), 2^e (1 + (m+1)/2^b)) has relative width <= 2^-b; the index is exact
// integer arithmetic, identical on every platform. Magnitudes below 2^min_exponent count in an
// underflow bucket, at or above 2^(max_exponent) (and inf/NaN) in an overflow bucket.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace fedcal {

struct HistogramLayout {
  int mantissa_bits = 5;   // 32 buckets per octave: <= 3.1% relative bucket width
  int min_exponent = -20;  // magnitudes < 2^-20 (~1e-6) underflow
  int max_exponent = 12;   // magnitudes >= 2^12 = 4096 overflow

  int buckets() const { return (max_exponent - min_exponent) << mantissa_bits; }
  // Counts per quantization point: zeros, then per sign (positive, negative): underflow, buckets, overflow.
  size_t counts_per_point() const { return 1 + 2 * (static_cast<size_t>(buckets()) + 2); }
  void validate() const;
  bool operator==(const HistogramLayout&) const = default;

  // Lower and upper edge of bucket `index` (0 <= index < buckets()).
  double bucket_low(int index) const;
  double bucket_high(int index) const;
};

// Offsets inside one point's counts.
struct HistogramSlots {
  static constexpr size_t kZeros = 0;
  // Start of the sign's block: [underflow, buckets..., overflow].
  static size_t sign_block(const HistogramLayout& layout, bool negative) { return 1 + (negative ? layout.buckets() + 2 : 0); }
};

// Adds `values` to one point's counts (size layout.counts_per_point()). NaN counts as overflow.
void accumulate_histogram(const HistogramLayout& layout, std::span<const float> values, std::span<uint64_t> counts);

// A summary of one point's counts.
struct HistogramSummary {
  uint64_t total = 0, zeros = 0, positive = 0, negative = 0, overflow = 0;
  double max_abs = 0;       // upper edge of the highest non-empty bucket (of either sign)
  double max_positive = 0;  // upper edge of the highest non-empty positive bucket
  double max_negative = 0;  // upper edge (as a magnitude) of the highest non-empty negative bucket
};
HistogramSummary summarize_histogram(const HistogramLayout& layout, std::span<const uint64_t> counts);

}  // namespace fedcal
