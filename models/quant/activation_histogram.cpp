#include "models/quant/activation_histogram.h"

#include <bit>
#include <cmath>

#include "common/error.h"

namespace fedcal {

void HistogramLayout::validate() const {
  if (mantissa_bits < 0 || mantissa_bits > 10) fail("histogram mantissa_bits {} is out of range [0, 10]", mantissa_bits);
  if (min_exponent < -126 || max_exponent > 127 || min_exponent >= max_exponent) {
    fail("histogram exponent range [{}, {}) is invalid", min_exponent, max_exponent);
  }
}

double HistogramLayout::bucket_low(int index) const {
  const int exponent = min_exponent + (index >> mantissa_bits);
  const int mantissa = index & ((1 << mantissa_bits) - 1);
  return std::ldexp(1.0 + static_cast<double>(mantissa) / (1 << mantissa_bits), exponent);
}

double HistogramLayout::bucket_high(int index) const {
  return index + 1 < buckets() ? bucket_low(index + 1) : std::ldexp(1.0, max_exponent);
}

void accumulate_histogram(const HistogramLayout& layout, std::span<const float> values, std::span<uint64_t> counts) {
  const int shift = 23 - layout.mantissa_bits;
  const int buckets = layout.buckets();
  const size_t positive_block = HistogramSlots::sign_block(layout, false);
  const size_t negative_block = HistogramSlots::sign_block(layout, true);
  for (float value : values) {
    const uint32_t bits = std::bit_cast<uint32_t>(value);
    const uint32_t magnitude = bits & 0x7fffffffu;
    if (magnitude == 0) {
      ++counts[HistogramSlots::kZeros];
      continue;
    }
    const size_t block = (bits >> 31) ? negative_block : positive_block;
    const int exponent = static_cast<int>(magnitude >> 23) - 127;  // denormals read as -127: underflow
    if (exponent >= layout.max_exponent) {                         // also inf and NaN (exponent 128)
      ++counts[block + 1 + buckets];
    } else if (exponent < layout.min_exponent) {
      ++counts[block];
    } else {
      const int index =
          ((exponent - layout.min_exponent) << layout.mantissa_bits) | static_cast<int>((magnitude & 0x7fffffu) >> shift);
      ++counts[block + 1 + index];
    }
  }
}

HistogramSummary summarize_histogram(const HistogramLayout& layout, std::span<const uint64_t> counts) {
  HistogramSummary summary;
  summary.zeros = counts[HistogramSlots::kZeros];
  const int buckets = layout.buckets();
  for (bool negative : {false, true}) {
    const size_t block = HistogramSlots::sign_block(layout, negative);
    uint64_t sign_total = 0;
    double sign_max = 0;
    for (int i = 0; i < buckets + 2; ++i) sign_total += counts[block + i];
    summary.overflow += counts[block + 1 + buckets];
    if (counts[block + 1 + buckets] > 0) {
      sign_max = std::ldexp(1.0, layout.max_exponent);
    } else {
      for (int i = buckets - 1; i >= 0; --i) {
        if (counts[block + 1 + i] > 0) {
          sign_max = layout.bucket_high(i);
          break;
        }
      }
      if (sign_max == 0 && counts[block] > 0) sign_max = std::ldexp(1.0, layout.min_exponent);
    }
    (negative ? summary.negative : summary.positive) = sign_total;
    (negative ? summary.max_negative : summary.max_positive) = sign_max;
  }
  summary.total = summary.zeros + summary.positive + summary.negative;
  summary.max_abs = std::max(summary.max_positive, summary.max_negative);
  return summary;
}

}  // namespace fedcal
