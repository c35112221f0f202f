#include "models/linear_int8.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"

namespace fedcal {
namespace {

void check_params(const QuantParams& params, const std::string& what) {
  if (!(params.scale > 0.0f) || !std::isfinite(params.scale))
    fail("{}: scale {} must be a positive finite number", what, params.scale);
  if (params.zero_point < -128 || params.zero_point > 127)
    fail("{}: zero point {} is outside [-128, 127]", what, params.zero_point);
}

}  // namespace

LinearInt8::LinearInt8(const QuantizedLinear& layer, std::string name)
    : name_(std::move(name)), in_(layer.weights.cols), out_(layer.weights.rows), per_channel_(layer.weights.scales.size() > 1) {
  const QuantizedMatrix& w = layer.weights;
  check_params(layer.input, name_ + " input");
  check_params(layer.output, name_ + " output");
  if (w.values.size() != in_ * out_ || (w.scales.size() != 1 && w.scales.size() != out_)) {
    fail("{}: quantized weights of {} values and {} scales do not fit ({}, {})", name_, w.values.size(), w.scales.size(), out_,
         in_);
  }
  for (float scale : w.scales) check_params({scale, 0}, name_ + " weight");
  const auto input_zp = static_cast<int8_t>(layer.input.zero_point);
  const auto output_zp = static_cast<int8_t>(layer.output.zero_point);

  check_xnn(xnn_create_convert_nc_f32_qs8(in_, in_, in_, layer.input.scale, input_zp, -128, 127, 0, quantize_.out()),
            "create_convert_nc_f32_qs8", name_);
  if (per_channel_) {
    const std::vector<int32_t> bias(out_, 0);
    check_xnn(xnn_create_convolution2d_nhwc_qc8(0, 0, 0, 0, 1, 1, 1, 1, 1, 1, /*groups=*/1, in_, out_, in_, out_, input_zp,
                                                layer.input.scale, w.scales.data(), w.values.data(), bias.data(), output_zp,
                                                layer.output.scale, -128, 127, 0, matmul_.out()),
              "create_convolution2d_nhwc_qc8 (1x1, per-channel weights)", name_);
  } else {
    check_xnn(xnn_create_fully_connected_nc_qs8(in_, out_, in_, out_, input_zp, layer.input.scale, w.scales[0], w.values.data(),
                                                /*bias=*/nullptr, output_zp, layer.output.scale, -128, 127, 0, matmul_.out()),
              "create_fully_connected_nc_qs8", name_);
  }
  check_xnn(xnn_create_convert_nc_qs8_f32(out_, out_, out_, layer.output.scale, output_zp, 0, dequantize_.out()),
            "create_convert_nc_qs8_f32", name_);
}

void LinearInt8::run_int8(const XnnRuntime& runtime, size_t batch, const int8_t* input, int8_t* output) {
  pthreadpool_t pool = runtime.threadpool();
  if (per_channel_) {
    check_xnn(xnn_setup_convolution2d_nhwc_qc8(matmul_.get(), batch, 1, 1, input, output, pool), "setup_convolution2d_nhwc_qc8",
              name_);
  } else {
    check_xnn(xnn_setup_fully_connected_nc_qs8(matmul_.get(), batch, input, output, pool), "setup_fully_connected_nc_qs8", name_);
  }
  check_xnn(xnn_run_operator(matmul_.get(), pool), "run_operator (INT8 linear)", name_);
}

void LinearInt8::run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) {
  const size_t padding = XNN_EXTRA_BYTES;
  if (input_q_.size() < batch * in_ + padding) input_q_.resize(batch * in_ + padding);
  if (output_q_.size() < batch * out_ + padding) output_q_.resize(batch * out_ + padding);
  // A conversion of a few thousand values takes less time than waking the thread pool for it.
  constexpr size_t kParallelConversion = 1 << 16;
  pthreadpool_t in_pool = batch * in_ >= kParallelConversion ? runtime.threadpool() : nullptr;
  pthreadpool_t out_pool = batch * out_ >= kParallelConversion ? runtime.threadpool() : nullptr;
  check_xnn(xnn_setup_convert_nc_f32_qs8(quantize_.get(), batch, input, input_q_.data(), in_pool), "setup_convert_nc_f32_qs8",
            name_);
  check_xnn(xnn_run_operator(quantize_.get(), in_pool), "run_operator (convert f32 -> qs8)", name_);
  run_int8(runtime, batch, input_q_.data(), output_q_.data());
  check_xnn(xnn_setup_convert_nc_qs8_f32(dequantize_.get(), batch, output_q_.data(), output, out_pool),
            "setup_convert_nc_qs8_f32", name_);
  check_xnn(xnn_run_operator(dequantize_.get(), out_pool), "run_operator (convert qs8 -> f32)", name_);
}

std::vector<int8_t> reference_linear_int8(const QuantizedLinear& layer, const std::vector<int8_t>& input, size_t batch) {
  const QuantizedMatrix& w = layer.weights;
  std::vector<int8_t> out(batch * w.rows);
  for (size_t b = 0; b < batch; ++b) {
    for (int r = 0; r < w.rows; ++r) {
      int32_t acc = 0;
      for (int c = 0; c < w.cols; ++c) {
        acc += (static_cast<int32_t>(input[b * w.cols + c]) - layer.input.zero_point) *
               w.values[static_cast<size_t>(r) * w.cols + c];
      }
      const double weight_scale = w.scales.size() > 1 ? w.scales[r] : w.scales[0];
      const double multiplier = static_cast<double>(layer.input.scale) * weight_scale / layer.output.scale;
      const double value = std::nearbyint(acc * multiplier) + layer.output.zero_point;
      out[b * w.rows + r] = static_cast<int8_t>(std::clamp(value, -128.0, 127.0));
    }
  }
  return out;
}

}  // namespace fedcal
