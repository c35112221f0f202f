// Calibration statistics of a model: one activation histogram per quantization point, as one flat
// vector of uint64 counts plus the layout that describes it. Statistics of disjoint text merge by
// adding the vectors, so merge(A, B) equals the statistics of A + B exactly.
//
// File format (".stats"): the 8 bytes "FCSTATS1", a uint64 little-endian header length, a JSON header
// {model_sha256, layout: {mantissa_bits, min_exponent, max_exponent}, points: [names], sequences, tokens},
// then points x counts_per_point uint64 little-endian counts.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "models/format/model_config.h"
#include "models/quant/activation_histogram.h"
#include "models/quant/quantization_points.h"

namespace fedcal {

struct CalibrationStats {
  std::string model_sha256;  // identity of the model the statistics were recorded on
  HistogramLayout layout;
  std::vector<std::string> points;
  uint64_t sequences = 0;
  uint64_t tokens = 0;
  std::vector<uint64_t> counts;  // points.size() * layout.counts_per_point()
  // Importance statistics (importance.h), when recorded (else all three are empty): the points' names,
  // their widths, and the per-channel sums of each point, concatenated in that order.
  std::vector<std::string> importance_points;
  std::vector<uint32_t> importance_widths;
  std::vector<uint64_t> importance;

  static CalibrationStats empty_for(const ModelConfig& config, const std::string& model_sha256,
                                    const HistogramLayout& layout = {}, bool with_importance = false);
  bool has_importance() const { return !importance_points.empty(); }
  std::span<const uint64_t> point(size_t index) const;
  std::span<uint64_t> point(size_t index);
  // Adds `other` in place; throws Error if it was recorded on another model or with another layout.
  void merge(const CalibrationStats& other);
  // Throws Error unless these statistics fit `config` (points and their order).
  void check_fits(const ModelConfig& config) const;
  // SHA-256 of the serialized statistics (for provenance in packages).
  std::string sha256() const;
};

// The vector an agent contributes to a round's secure aggregation: every histogram count, the
// importance sums (when recorded), then the number of sequences, then the number of tokens. The one definition of that layout, for the agent
// that builds it, the coordinator that reads the sum back, and the benchmarks and tests.
//
// An importance sum of one agent can reach 2^49 and more, so it travels as kImportanceLimbs limbs of
// kImportanceLimbBits bits, lowest first: each of an agent's limbs is below 2^21 (the top one below
// its tokens / 64), so the limbs summed over up to 1024 agents still fit 32-bit lanes, and the sum
// read back (limbs recombined) is exact.
inline constexpr int kImportanceLimbs = 3;
inline constexpr int kImportanceLimbBits = 21;
// The most one agent adds to any value of its vector other than its counts: an importance limb's bound.
uint64_t importance_limb_bound(uint64_t tokens_per_agent);
size_t contribution_length(const CalibrationStats& stats);
std::vector<uint64_t> contribution_vector(const CalibrationStats& stats);
// The counts and importance part of a contribution vector (where distributed-DP noise is added).
std::span<uint64_t> contribution_counts(std::span<uint64_t> vector);
// `layout` (model, points, histogram layout) with counts, sequences and tokens read from a (summed)
// contribution vector; throws Error if its length does not fit.
CalibrationStats stats_from_contribution(const CalibrationStats& layout, std::span<const uint64_t> vector);

std::vector<std::byte> serialize_stats(const CalibrationStats& stats);
// Parses untrusted bytes; `source` names them in errors.
CalibrationStats parse_stats(std::span<const std::byte> bytes, const std::string& source);
CalibrationStats read_stats(const std::string& path);
void write_stats(const CalibrationStats& stats, const std::string& path);

// Records activation histograms into `stats` as the FP32 forward pass runs.
class StatsRecorder : public ActivationObserver {
 public:
  // `stats` must outlive the recorder.
  explicit StatsRecorder(CalibrationStats& stats);
  void observe(int point, std::span<const float> values) override;

 private:
  CalibrationStats& stats_;
  std::vector<int64_t> importance_offset_;  // by point index: start of its sums in stats.importance, or -1
  std::vector<uint32_t> importance_width_;  // by point index
};

}  // namespace fedcal
