#include "models/quant/importance.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/little_endian.h"
#include "models/family/layer_tensors.h"
#include "models/format/gguf_model.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/quantization_points.h"

namespace fedcal {

uint64_t importance_fixed_point(float x) {
  const double scaled = static_cast<double>(x) * static_cast<double>(x) * static_cast<double>(uint64_t{1} << kImportanceFractionBits);
  if (!(scaled < static_cast<double>(kImportanceTokenCap))) return kImportanceTokenCap;  // also NaN and infinity
  return static_cast<uint64_t>(std::llround(scaled));
}

std::vector<int> importance_points(const ModelConfig& config) {
  std::vector<int> points;
  for (int layer = 0; layer < config.n_layers; ++layer) {
    for (LayerPoint point : {LayerPoint::kAttnIn, LayerPoint::kAttnOut, LayerPoint::kFfnIn, LayerPoint::kFfnHidden}) {
      points.push_back(layer_point(layer, point));
    }
  }
  return points;
}

std::vector<std::byte> serialize_imatrix(const Imatrix& imatrix) {
  std::vector<std::byte> out;
  auto put = [&out](const void* data, size_t size) {
    const size_t at = out.size();
    out.resize(at + size);
    if (size != 0) std::memcpy(out.data() + at, data, size);
  };
  auto put_i32 = [&put](int32_t value) { put(&value, 4); };
  put_i32(static_cast<int32_t>(imatrix.entries.size()));
  for (const ImatrixEntry& entry : imatrix.entries) {
    put_i32(static_cast<int32_t>(entry.name.size()));
    put(entry.name.data(), entry.name.size());
    put_i32(entry.ncall);
    put_i32(static_cast<int32_t>(entry.values.size()));
    put(entry.values.data(), entry.values.size() * 4);
  }
  put_i32(imatrix.last_call);
  put_i32(static_cast<int32_t>(imatrix.dataset.size()));
  put(imatrix.dataset.data(), imatrix.dataset.size());
  return out;
}

namespace {

// Per linear layer (fedcal's name, in layer order), the sums of x^2 over tokens of each input channel.
struct ImportanceSums {
  std::string name;
  std::vector<double> sums;
};
std::vector<ImportanceSums> importance_sums(const CalibrationStats& stats, const ModelConfig& config) {
  if (!stats.has_importance()) fail("the statistics hold no importance sums: calibrate with --importance (or a round with the imatrix export)");
  stats.check_fits(config);
  const std::vector<int> points = importance_points(config);
  if (stats.importance_points.size() != points.size()) fail("the statistics' importance points do not fit the model");
  if (stats.tokens == 0 || stats.sequences == 0 || stats.sequences > INT32_MAX) fail("the statistics hold no tokens");
  std::vector<ImportanceSums> out;
  size_t offset = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    const int layer = points[i] / kPointsPerLayer;
    const auto point = static_cast<LayerPoint>(points[i] % kPointsPerLayer);
    const uint32_t width = stats.importance_widths[i];
    std::vector<double> sums(width);
    for (uint32_t c = 0; c < width; ++c) sums[c] = std::ldexp(static_cast<double>(stats.importance[offset + c]), -kImportanceFractionBits);
    offset += width;
    for (const LayerTensor* linear : layer_tensors(config)) {  // the linears that read this point
      if (linear->input == point) out.push_back({fmt::format("layers.{}.{}", layer, linear->name), sums});
    }
  }
  return out;
}

}  // namespace

std::map<std::string, std::vector<double>> linear_importance(const CalibrationStats& stats, const ModelConfig& config) {
  std::map<std::string, std::vector<double>> out;
  for (ImportanceSums& entry : importance_sums(stats, config)) {
    for (double& sum : entry.sums) sum /= static_cast<double>(stats.tokens);
    out.emplace(entry.name, std::move(entry.sums));
  }
  return out;
}

Imatrix imatrix_from_stats(const CalibrationStats& stats, const ModelConfig& config, const std::string& dataset) {
  const std::vector<ImportanceSums> entries = importance_sums(stats, config);
  Imatrix imatrix;
  imatrix.dataset = dataset;
  imatrix.last_call = static_cast<int32_t>(stats.sequences);
  for (const ImportanceSums& entry : entries) {
    std::vector<float> values(entry.sums.size());
    for (size_t c = 0; c < values.size(); ++c)
      values[c] = static_cast<float>(entry.sums[c] / static_cast<double>(stats.tokens) * static_cast<double>(stats.sequences));
    imatrix.entries.push_back({gguf_tensor_name(entry.name), imatrix.last_call, std::move(values)});
  }
  return imatrix;
}

GgufWriter imatrix_gguf(const CalibrationStats& stats, const ModelConfig& config, const std::string& dataset) {
  const std::vector<ImportanceSums> entries = importance_sums(stats, config);
  GgufWriter gguf;
  gguf.set("general.type", GgufValue::string("imatrix"));
  gguf.set("imatrix.datasets", GgufValue::string_array({dataset}));
  gguf.set("imatrix.chunk_count", GgufValue::u32(static_cast<uint32_t>(stats.sequences)));
  gguf.set("imatrix.chunk_size", GgufValue::u32(static_cast<uint32_t>((stats.tokens + stats.sequences - 1) / stats.sequences)));
  for (const ImportanceSums& entry : entries) {
    std::vector<float> sums(entry.sums.begin(), entry.sums.end());
    const std::vector<float> count = {static_cast<float>(stats.tokens)};
    const std::string name = gguf_tensor_name(entry.name);
    gguf.add_tensor(name + ".in_sum2", {sums.size(), 1}, GgmlType::kF32, ggml_encode(GgmlType::kF32, sums));
    gguf.add_tensor(name + ".counts", {1, 1}, GgmlType::kF32, ggml_encode(GgmlType::kF32, count));
  }
  return gguf;
}

}  // namespace fedcal
