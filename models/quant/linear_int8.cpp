#include "models/quant/linear_int8.h"

#include <algorithm>
#include <cmath>

#include "common/error.h"
#include "models/engine/vector_math.h"

namespace fedcal {
namespace {

void check_params(const QuantParams& params, const std::string& what) {
  if (!(params.scale > 0.0f) || !std::isfinite(params.scale))
    fail("{}: scale {} must be a positive finite number", what, params.scale);
  if (params.zero_point < -128 || params.zero_point > 127)
    fail("{}: zero point {} is outside [-128, 127]", what, params.zero_point);
}

}  // namespace

const QuantizedLinear* int8_token_table(const QuantizedLinears& int8, bool shared_classifier) {
  if (auto it = int8.find("token_embedding"); it != int8.end()) return &it->second;
  if (auto head = int8.find("classifier"); shared_classifier && head != int8.end()) return &head->second;
  return nullptr;
}

std::vector<int32_t> int8_bias(const QuantizedLinear& layer, std::span<const float> bias, const std::string& name) {
  const QuantizedMatrix& w = layer.weights;
  if (bias.size() != static_cast<size_t>(w.rows)) fail("{}: bias has {} values for {} outputs", name, bias.size(), w.rows);
  std::vector<int32_t> out(bias.size());
  for (int r = 0; r < w.rows; ++r) {
    const double value = std::nearbyint(static_cast<double>(bias[r]) / (static_cast<double>(layer.input.scale) * w.row_scale(r)));
    if (!(std::fabs(value) < 2147483647.0)) fail("{}: bias {} of output {} does not fit the INT32 accumulator at these scales", name, bias[r], r);
    out[r] = static_cast<int32_t>(value);
  }
  return out;
}

LinearInt8::LinearInt8(const QuantizedLinear& layer, std::string name, std::span<const float> bias)
    : name_(std::move(name)),
      in_(layer.weights.cols),
      out_(layer.weights.rows),
      per_channel_(layer.weights.per_channel()),
      input_(layer.input),
      output_(layer.output) {
  const QuantizedMatrix& w = layer.weights;
  if (w.per_group()) fail("{}: weights in groups of {} need activations quantized at run time (--activations dynamic-blocks)", name_, kWeightGroup);
  check_params(layer.input, name_ + " input");
  check_params(layer.output, name_ + " output");
  w.check(name_);
  const auto input_zp = static_cast<int8_t>(layer.input.zero_point);
  const auto output_zp = static_cast<int8_t>(layer.output.zero_point);

  const std::vector<int32_t> bias_q = bias.empty() ? std::vector<int32_t>(out_, 0) : int8_bias(layer, bias, name_);
  if (per_channel_) {
    check_xnn(xnn_create_convolution2d_nhwc_qc8(0, 0, 0, 0, 1, 1, 1, 1, 1, 1, /*groups=*/1, in_, out_, in_, out_, input_zp,
                                                layer.input.scale, w.scales.data(), w.values.data(), bias_q.data(), output_zp,
                                                layer.output.scale, -128, 127, 0, matmul_.out()),
              "create_convolution2d_nhwc_qc8 (1x1, per-channel weights)", name_);
  } else {
    check_xnn(xnn_create_fully_connected_nc_qs8(in_, out_, in_, out_, input_zp, layer.input.scale, w.scales[0], w.values.data(),
                                                bias_q.data(), output_zp, layer.output.scale, -128, 127, 0, matmul_.out()),
              "create_fully_connected_nc_qs8", name_);
  }
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
  // The conversions run on the calling thread: even the classifier's 49,152 logits take less time
  // than an XNNPACK convert operator's setup and thread-pool dispatch.
  quantize_int8(input, input_q_.data(), batch * in_, input_.scale, input_.zero_point);
  run_int8(runtime, batch, input_q_.data(), output_q_.data());
  dequantize_int8(output_q_.data(), output, batch * out_, output_.scale, output_.zero_point);
}

std::vector<int8_t> reference_linear_int8(const QuantizedLinear& layer, const std::vector<int8_t>& input, size_t batch,
                                          const std::vector<int32_t>& bias) {
  const QuantizedMatrix& w = layer.weights;
  std::vector<int8_t> out(batch * w.rows);
  for (size_t b = 0; b < batch; ++b) {
    for (int r = 0; r < w.rows; ++r) {
      int32_t acc = bias.empty() ? 0 : bias[static_cast<size_t>(r)];
      for (int c = 0; c < w.cols; ++c) {
        acc += (static_cast<int32_t>(input[b * w.cols + c]) - layer.input.zero_point) *
               w.values[static_cast<size_t>(r) * w.cols + c];
      }
      const double weight_scale = w.row_scale(r);
      const double multiplier = static_cast<double>(layer.input.scale) * weight_scale / layer.output.scale;
      const double value = std::nearbyint(acc * multiplier) + layer.output.zero_point;
      out[b * w.rows + r] = static_cast<int8_t>(std::clamp(value, -128.0, 127.0));
    }
  }
  return out;
}

}  // namespace fedcal
