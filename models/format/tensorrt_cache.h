// TensorRT's INT8 calibration cache: the text file its IInt8EntropyCalibrator2 writes and
// `trtexec --int8 --calib=FILE` reads, so TensorRT builds an engine with the fleet's ranges instead of
// calibrating again on the device.
//
//   TRT-<version>-EntropyCalibration2
//   <tensor name>: <scale as 8 hex digits of its float32 bits>
//
// One line per activation tensor of the FP32 ONNX export (onnx_model.h) that an INT8 MatMul reads or
// writes: the quantization points' names, scale = the package's activation scale (amax / 127).
// TensorRT's activation ranges are symmetric, so a package with zero points is refused.
#pragma once

#include <string>
#include <vector>

#include "models/format/model_config.h"
#include "models/quant/linear_int8.h"

namespace fedcal {

struct TensorrtCacheEntry {
  std::string tensor;
  float scale;
};

// The entries for every INT8 linear's input and output, in graph order. Throws Error if `int8` is
// empty, has a zero point, or gives one tensor two scales.
std::vector<TensorrtCacheEntry> tensorrt_cache_entries(const ModelConfig& config, const QuantizedLinears& int8);

// The cache file's text. `tensorrt_version` is the integer TensorRT puts in the header
// (NV_TENSORRT_VERSION: 8602 for TensorRT 8.6.2 in JetPack 6).
std::string tensorrt_cache_text(const std::vector<TensorrtCacheEntry>& entries, int tensorrt_version);

}  // namespace fedcal
