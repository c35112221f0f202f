#include "models/quant/calibration_stats.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <bit>
#include <cstring>

#include "common/byte_reader.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/little_endian.h"
#include "common/mapped_file.h"
#include "common/sha256.h"
#include "models/quant/importance.h"

namespace fedcal {
namespace {

constexpr char kStatsMagic[8] = {'F', 'C', 'S', 'T', 'A', 'T', 'S', '1'};
constexpr uint64_t kMaxHeaderBytes = 16u << 20;
constexpr size_t kMaxPoints = 1 << 20;

}  // namespace

CalibrationStats CalibrationStats::empty_for(const ModelConfig& config, const std::string& model_sha256,
                                             const HistogramLayout& layout, bool with_importance) {
  layout.validate();
  CalibrationStats stats;
  stats.model_sha256 = model_sha256;
  stats.layout = layout;
  stats.points = quantization_point_names(config);
  stats.counts.assign(stats.points.size() * layout.counts_per_point(), 0);
  if (with_importance) {
    size_t total = 0;
    for (int point : fedcal::importance_points(config)) {
      stats.importance_points.push_back(stats.points[static_cast<size_t>(point)]);
      stats.importance_widths.push_back(static_cast<uint32_t>(point_width(config, point)));
      total += stats.importance_widths.back();
    }
    stats.importance.assign(total, 0);
  }
  return stats;
}

std::span<const uint64_t> CalibrationStats::point(size_t index) const {
  return std::span(counts).subspan(index * layout.counts_per_point(), layout.counts_per_point());
}

std::span<uint64_t> CalibrationStats::point(size_t index) {
  return std::span(counts).subspan(index * layout.counts_per_point(), layout.counts_per_point());
}

void CalibrationStats::merge(const CalibrationStats& other) {
  if (other.model_sha256 != model_sha256) {
    fail("statistics were recorded on different models (sha256 {} vs {})", other.model_sha256, model_sha256);
  }
  if (!(other.layout == layout)) fail("statistics have different histogram layouts");
  if (other.points != points) fail("statistics have different quantization points");
  if (other.counts.size() != counts.size()) fail("statistics have different lengths");
  if (other.importance_points != importance_points || other.importance_widths != importance_widths ||
      other.importance.size() != importance.size()) {
    fail("statistics differ in their importance sums ({} vs {} points): record both with or both without them",
         other.importance_points.size(), importance_points.size());
  }
  for (size_t i = 0; i < counts.size(); ++i) counts[i] += other.counts[i];
  for (size_t i = 0; i < importance.size(); ++i) importance[i] += other.importance[i];
  sequences += other.sequences;
  tokens += other.tokens;
}

void CalibrationStats::check_fits(const ModelConfig& config) const {
  const auto expected = quantization_point_names(config);
  if (points != expected) {
    fail("statistics have {} quantization points ({}...), the model needs {} ({}...)", points.size(),
         points.empty() ? "" : points.front(), expected.size(), expected.front());
  }
}

std::string CalibrationStats::sha256() const {
  const auto bytes = serialize_stats(*this);
  return sha256_hex(bytes);
}

size_t contribution_length(const CalibrationStats& stats) {
  return stats.counts.size() + kImportanceLimbs * stats.importance.size() + 2;
}

uint64_t importance_limb_bound(uint64_t tokens_per_agent) {
  // The top limb holds bits 42..62 of a sum of at most tokens x kImportanceTokenCap (2^36).
  constexpr int cap_bits = std::countr_zero(kImportanceTokenCap);
  static_assert(kImportanceTokenCap == uint64_t{1} << cap_bits, "the cap is a power of two");
  constexpr int top_shift = (kImportanceLimbs - 1) * kImportanceLimbBits;
  static_assert(kImportanceLimbs * kImportanceLimbBits >= 63 && top_shift >= cap_bits);
  const uint64_t top = (tokens_per_agent >> (top_shift - cap_bits)) + 1;
  return std::max(uint64_t{1} << kImportanceLimbBits, top);
}

std::vector<uint64_t> contribution_vector(const CalibrationStats& stats) {
  std::vector<uint64_t> vector = stats.counts;
  constexpr uint64_t limb_mask = (uint64_t{1} << kImportanceLimbBits) - 1;
  for (const uint64_t sum : stats.importance) {
    for (int limb = 0; limb < kImportanceLimbs; ++limb) {
      const uint64_t value = sum >> (limb * kImportanceLimbBits);
      vector.push_back(limb + 1 < kImportanceLimbs ? value & limb_mask : value);
    }
  }
  vector.push_back(stats.sequences);
  vector.push_back(stats.tokens);
  return vector;
}

std::span<uint64_t> contribution_counts(std::span<uint64_t> vector) { return vector.first(vector.size() - 2); }

CalibrationStats stats_from_contribution(const CalibrationStats& layout, std::span<const uint64_t> vector) {
  if (vector.size() != contribution_length(layout)) {
    fail("a contribution vector of {} values does not fit statistics of {} counts", vector.size(), layout.counts.size());
  }
  CalibrationStats stats = layout;
  const auto counts_end = vector.begin() + static_cast<std::ptrdiff_t>(stats.counts.size());
  std::copy(vector.begin(), counts_end, stats.counts.begin());
  for (size_t i = 0; i < stats.importance.size(); ++i) {
    uint64_t sum = 0;  // the limbs' sums recombined (modulo 2^64: the round's budget keeps the total below 2^63)
    for (int limb = 0; limb < kImportanceLimbs; ++limb)
      sum += counts_end[static_cast<std::ptrdiff_t>(i * kImportanceLimbs) + limb] << (limb * kImportanceLimbBits);
    stats.importance[i] = sum;
  }
  stats.sequences = vector[vector.size() - 2];
  stats.tokens = vector[vector.size() - 1];
  return stats;
}

std::vector<std::byte> serialize_stats(const CalibrationStats& stats) {
  nlohmann::json header = {
      {"model_sha256", stats.model_sha256},
      {"layout",
       {{"mantissa_bits", stats.layout.mantissa_bits},
        {"min_exponent", stats.layout.min_exponent},
        {"max_exponent", stats.layout.max_exponent}}},
      {"points", stats.points},
      {"sequences", stats.sequences},
      {"tokens", stats.tokens},
  };
  if (stats.has_importance()) {
    header["importance"] = {{"fraction_bits", kImportanceFractionBits},
                            {"points", stats.importance_points},
                            {"widths", stats.importance_widths}};
  }
  const std::string text = header.dump();
  const uint64_t header_size = text.size();
  std::vector<std::byte> out(sizeof(kStatsMagic) + 8 + text.size() + (stats.counts.size() + stats.importance.size()) * 8);
  std::byte* cursor = out.data();
  auto put = [&](const void* data, size_t size) {
    if (size == 0) return;  // (an empty vector's data() may be null, which memcpy must not get)
    std::memcpy(cursor, data, size);
    cursor += size;
  };
  put(kStatsMagic, sizeof(kStatsMagic));
  put(&header_size, 8);
  put(text.data(), text.size());
  put(stats.counts.data(), stats.counts.size() * 8);
  put(stats.importance.data(), stats.importance.size() * 8);
  return out;
}

CalibrationStats parse_stats(std::span<const std::byte> bytes, const std::string& source) {
  ByteReader reader(bytes, source);
  auto magic = reader.take(sizeof(kStatsMagic), "magic");
  if (std::memcmp(magic.data(), kStatsMagic, sizeof(kStatsMagic)) != 0) fail("{}: not a fedcal statistics file (bad magic)", source);
  const uint64_t header_size = reader.read<uint64_t>("header length");
  if (header_size > kMaxHeaderBytes || header_size > reader.remaining())
    fail("{}: header length {} is invalid", source, header_size);
  auto header_bytes = reader.take(header_size, "header");
  const nlohmann::json header =
      nlohmann::json::parse(reinterpret_cast<const char*>(header_bytes.data()),
                            reinterpret_cast<const char*>(header_bytes.data()) + header_size, nullptr, false);
  if (header.is_discarded() || !header.is_object()) fail("{}: header is not a JSON object", source);

  CalibrationStats stats;
  with_context([&] { return source + ": header"; },
               [&] {
                 auto field = [&](const nlohmann::json& node, const char* name) -> const nlohmann::json& {
                   auto it = node.find(name);
                   if (it == node.end()) fail("missing field '{}'", name);
                   return *it;
                 };
                 auto integer = [&](const nlohmann::json& node, const char* name, int64_t low, int64_t high) {
                   const auto& value = field(node, name);
                   if (!value.is_number_integer() || value.get<int64_t>() < low || value.get<int64_t>() > high) {
                     fail("field '{}' must be an integer in [{}, {}]", name, low, high);
                   }
                   return value.get<int64_t>();
                 };
                 const auto& sha = field(header, "model_sha256");
                 if (!sha.is_string()) fail("field 'model_sha256' is not a string");
                 stats.model_sha256 = sha.get<std::string>();
                 const auto& layout = field(header, "layout");
                 if (!layout.is_object()) fail("field 'layout' is not an object");
                 stats.layout.mantissa_bits = static_cast<int>(integer(layout, "mantissa_bits", 0, 10));
                 stats.layout.min_exponent = static_cast<int>(integer(layout, "min_exponent", -126, 127));
                 stats.layout.max_exponent = static_cast<int>(integer(layout, "max_exponent", -126, 127));
                 stats.layout.validate();
                 const auto& points = field(header, "points");
                 if (!points.is_array() || points.size() > kMaxPoints)
                   fail("field 'points' is not an array of at most {} names", kMaxPoints);
                 for (const auto& name : points) {
                   if (!name.is_string()) fail("a point name is not a string");
                   stats.points.push_back(name.get<std::string>());
                 }
                 stats.sequences = static_cast<uint64_t>(integer(header, "sequences", 0, INT64_MAX));
                 stats.tokens = static_cast<uint64_t>(integer(header, "tokens", 0, INT64_MAX));
                 if (auto importance = header.find("importance"); importance != header.end()) {
                   if (!importance->is_object()) fail("field 'importance' is not an object");
                   integer(*importance, "fraction_bits", kImportanceFractionBits, kImportanceFractionBits);
                   const auto& names = field(*importance, "points");
                   const auto& widths = field(*importance, "widths");
                   if (!names.is_array() || !widths.is_array() || names.size() != widths.size() || names.empty() ||
                       names.size() > kMaxPoints) {
                     fail("field 'importance' needs 'points' and 'widths' of the same non-zero length");
                   }
                   for (size_t i = 0; i < names.size(); ++i) {
                     if (!names[i].is_string()) fail("an importance point name is not a string");
                     if (!widths[i].is_number_unsigned() || widths[i].get<uint64_t>() == 0 || widths[i].get<uint64_t>() > (1u << 24)) {
                       fail("importance width {} is not in [1, 2^24]", i);
                     }
                     stats.importance_points.push_back(names[i].get<std::string>());
                     stats.importance_widths.push_back(widths[i].get<uint32_t>());
                   }
                 }
               });
  const uint64_t expected = static_cast<uint64_t>(stats.points.size()) * stats.layout.counts_per_point();
  uint64_t importance = 0;
  for (uint32_t width : stats.importance_widths) importance += width;
  if (reader.remaining() != (expected + importance) * 8) {
    fail("{}: {} points x {} counts and {} importance sums need {} bytes, the file has {}", source, stats.points.size(),
         stats.layout.counts_per_point(), importance, (expected + importance) * 8, reader.remaining());
  }
  stats.counts.resize(expected);
  auto counts = reader.take(expected * 8, "counts");
  std::memcpy(stats.counts.data(), counts.data(), counts.size());
  stats.importance.resize(importance);
  auto sums = reader.take(importance * 8, "importance sums");
  if (!sums.empty()) std::memcpy(stats.importance.data(), sums.data(), sums.size());
  return stats;
}

CalibrationStats read_stats(const std::string& path) {
  MappedFile file(path);
  return parse_stats(file.bytes(), path);
}

void write_stats(const CalibrationStats& stats, const std::string& path) { write_file_atomically(path, serialize_stats(stats)); }

StatsRecorder::StatsRecorder(CalibrationStats& stats)
    : stats_(stats), importance_offset_(stats.points.size(), -1), importance_width_(stats.points.size(), 0) {
  int64_t offset = 0;
  for (size_t i = 0; i < stats.importance_points.size(); ++i) {
    const auto found = std::find(stats.points.begin(), stats.points.end(), stats.importance_points[i]);
    if (found == stats.points.end()) fail("importance point '{}' is not a quantization point", stats.importance_points[i]);
    const size_t index = static_cast<size_t>(found - stats.points.begin());
    importance_offset_[index] = offset;
    importance_width_[index] = stats.importance_widths[i];
    offset += stats.importance_widths[i];
  }
}

void StatsRecorder::observe(int point, std::span<const float> values) {
  const size_t index = static_cast<size_t>(point);
  accumulate_histogram(stats_.layout, values, stats_.point(index));
  if (importance_offset_[index] < 0) return;
  const size_t width = importance_width_[index];
  uint64_t* sums = stats_.importance.data() + importance_offset_[index];
  for (size_t at = 0; at < values.size(); ++at) sums[at % width] += importance_fixed_point(values[at]);
}

}  // namespace fedcal
