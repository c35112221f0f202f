#include "models/quant/calibration_stats.h"

#include <nlohmann/json.hpp>

#include <cstring>

#include "common/byte_reader.h"
#include "common/error.h"
#include "common/file_util.h"
#include "common/little_endian.h"
#include "common/mapped_file.h"
#include "common/sha256.h"

namespace fedcal {
namespace {

constexpr char kMagic[8] = {'F', 'C', 'S', 'T', 'A', 'T', 'S', '1'};
constexpr uint64_t kMaxHeaderBytes = 16u << 20;
constexpr size_t kMaxPoints = 1 << 20;

}  // namespace

CalibrationStats CalibrationStats::empty_for(const ModelConfig& config, const std::string& model_sha256,
                                             const HistogramLayout& layout) {
  layout.validate();
  CalibrationStats stats;
  stats.model_sha256 = model_sha256;
  stats.layout = layout;
  stats.points = quantization_point_names(config);
  stats.counts.assign(stats.points.size() * layout.counts_per_point(), 0);
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
  for (size_t i = 0; i < counts.size(); ++i) counts[i] += other.counts[i];
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

size_t contribution_length(const CalibrationStats& stats) { return stats.counts.size() + 2; }

std::vector<uint64_t> contribution_vector(const CalibrationStats& stats) {
  std::vector<uint64_t> vector = stats.counts;
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
  std::copy(vector.begin(), vector.end() - 2, stats.counts.begin());
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
  const std::string text = header.dump();
  const uint64_t header_size = text.size();
  std::vector<std::byte> out(sizeof(kMagic) + 8 + text.size() + stats.counts.size() * 8);
  std::byte* cursor = out.data();
  auto put = [&](const void* data, size_t size) {
    std::memcpy(cursor, data, size);
    cursor += size;
  };
  put(kMagic, sizeof(kMagic));
  put(&header_size, 8);
  put(text.data(), text.size());
  put(stats.counts.data(), stats.counts.size() * 8);
  return out;
}

CalibrationStats parse_stats(std::span<const std::byte> bytes, const std::string& source) {
  ByteReader reader(bytes, source);
  auto magic = reader.take(sizeof(kMagic), "magic");
  if (std::memcmp(magic.data(), kMagic, sizeof(kMagic)) != 0) fail("{}: not a fedcal statistics file (bad magic)", source);
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
               });
  const uint64_t expected = static_cast<uint64_t>(stats.points.size()) * stats.layout.counts_per_point();
  if (reader.remaining() != expected * 8) {
    fail("{}: {} points x {} counts need {} bytes of counts, the file has {}", source, stats.points.size(),
         stats.layout.counts_per_point(), expected * 8, reader.remaining());
  }
  stats.counts.resize(expected);
  auto counts = reader.take(expected * 8, "counts");
  std::memcpy(stats.counts.data(), counts.data(), counts.size());
  return stats;
}

CalibrationStats read_stats(const std::string& path) {
  MappedFile file(path);
  return parse_stats(file.bytes(), path);
}

void write_stats(const CalibrationStats& stats, const std::string& path) { write_file_atomically(path, serialize_stats(stats)); }

void StatsRecorder::observe(int point, std::span<const float> values) {
  accumulate_histogram(stats_.layout, values, stats_.point(static_cast<size_t>(point)));
}

}  // namespace fedcal
