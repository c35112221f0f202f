#include "models/quant/importance.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "common/error.h"
#include "common/little_endian.h"
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

Imatrix imatrix_from_stats(const CalibrationStats& stats, const ModelConfig& config, const std::string& dataset) {
  if (!stats.has_importance()) fail("the statistics hold no importance sums: calibrate with --importance (or a round with the imatrix export)");
  stats.check_fits(config);
  const std::vector<int> points = importance_points(config);
  if (stats.importance_points.size() != points.size()) fail("the statistics' importance points do not fit the model");
  if (stats.tokens == 0 || stats.sequences == 0 || stats.sequences > INT32_MAX) fail("the statistics hold no tokens");
  Imatrix imatrix;
  imatrix.last_call = static_cast<int32_t>(stats.sequences);
  imatrix.dataset = dataset;
  size_t offset = 0;
  for (size_t i = 0; i < points.size(); ++i) {
    const int layer = points[i] / kPointsPerLayer;
    const auto point = static_cast<LayerPoint>(points[i] % kPointsPerLayer);
    std::vector<const char*> linears;
    if (point == LayerPoint::kAttnIn) linears = {"wq", "wk", "wv"};
    if (point == LayerPoint::kAttnOut) linears = {"wo"};
    if (point == LayerPoint::kFfnIn) linears = {"w1", "w3"};
    if (point == LayerPoint::kFfnHidden) linears = {"w2"};
    const uint32_t width = stats.importance_widths[i];
    std::vector<float> values(width);
    for (uint32_t c = 0; c < width; ++c) {
      const double sum = std::ldexp(static_cast<double>(stats.importance[offset + c]), -kImportanceFractionBits);
      values[c] = static_cast<float>(sum / static_cast<double>(stats.tokens) * static_cast<double>(stats.sequences));
    }
    offset += width;
    for (const char* linear : linears) {
      imatrix.entries.push_back({gguf_tensor_name(fmt::format("layers.{}.{}", layer, linear)), imatrix.last_call, values});
    }
  }
  return imatrix;
}

}  // namespace fedcal
