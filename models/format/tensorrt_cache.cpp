#include "models/format/tensorrt_cache.h"

#include <bit>
#include <fmt/format.h>

#include "common/error.h"
#include "models/quant/quantization_points.h"
#include "models/quant/quantize.h"

namespace fedcal {

std::vector<TensorrtCacheEntry> tensorrt_cache_entries(const ModelConfig& config, const QuantizedLinears& int8) {
  const std::vector<std::string> points = quantization_point_names(config);
  std::vector<TensorrtCacheEntry> entries;
  auto add = [&](const std::string& linear, int point, const QuantParams& params) {
    const std::string& tensor = points[static_cast<size_t>(point)];
    if (params.zero_point != 0) {
      fail("{}: zero point {} at {}; TensorRT's ranges are symmetric (quantize without --asymmetric)", linear, params.zero_point,
           tensor);
    }
    for (const TensorrtCacheEntry& entry : entries) {
      if (entry.tensor != tensor) continue;
      if (entry.scale != params.scale) fail("{}: scale {} at {}, another linear reading it has {}", linear, params.scale, tensor, entry.scale);
      return;
    }
    entries.push_back({tensor, params.scale});
  };
  for (const LinearSite& site : linear_sites(config)) {
    const auto it = int8.find(site.name);
    if (it == int8.end()) continue;
    add(site.name, site.input_point, it->second.input);
    add(site.name, site.output_point, it->second.output);
  }
  if (entries.empty()) fail("no INT8 linear layers: a TensorRT cache needs a package's scales or statistics");
  return entries;
}

std::string tensorrt_cache_text(const std::vector<TensorrtCacheEntry>& entries, int tensorrt_version) {
  std::string text = fmt::format("TRT-{}-EntropyCalibration2\n", tensorrt_version);
  for (const TensorrtCacheEntry& entry : entries) text += fmt::format("{}: {:08x}\n", entry.tensor, std::bit_cast<uint32_t>(entry.scale));
  return text;
}

}  // namespace fedcal
