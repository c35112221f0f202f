// A W8A8 linear layer on XNNPACK: FP32 input quantized to INT8 at a static scale, an INT8 x INT8
// fully connected operator with INT32 accumulation requantized to INT8 at a static output scale, and
// the result converted back to FP32 for the parts of the forward pass that stay FP32.
//   per-tensor weights:  xnn_create_fully_connected_nc_qs8
//   per-channel weights: xnn_create_convolution2d_nhwc_qc8 as a 1x1 convolution
#pragma once

#include <map>
#include <span>
#include <string>
#include <vector>

#include "models/engine/xnn_runtime.h"
#include "models/quant/scales.h"

namespace fedcal {

struct QuantizedLinear {
  QuantizedMatrix weights;  // (out, in)
  QuantParams input;        // activation entering the layer
  QuantParams output;       // INT8 output of the layer
};

// INT8 layers by linear name ("layers.3.wq", ..., "classifier"); a linear not listed stays FP32.
// "token_embedding" may hold an INT8 token table (its activation parameters are unused).
using QuantizedLinears = std::map<std::string, QuantizedLinear>;

// The INT8 token table among `int8`: "token_embedding", else the classifier's when the two are tied;
// nullptr: the table is FP32.
const QuantizedLinear* int8_token_table(const QuantizedLinears& int8, bool shared_classifier);

// A bias (FP32, one per output) folded into the INT32 accumulator: round(b / (input scale * weight
// scale of the row)), so the output is requantized with the bias in, as the output scale was
// calibrated. The rounding is at most half an accumulator step, far below half an output step.
std::vector<int32_t> int8_bias(const QuantizedLinear& layer, std::span<const float> bias, const std::string& name);

class LinearInt8 : public Linear {
 public:
  LinearInt8(const QuantizedLinear& layer, std::string name, std::span<const float> bias = {});
  void run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) override;
  size_t weight_bytes() const override { return in_ * out_; }
  // The INT8 part alone: int8 input (batch, in) -> int8 output (batch, out).
  void run_int8(const XnnRuntime& runtime, size_t batch, const int8_t* input, int8_t* output);

 private:
  std::string name_;
  size_t in_, out_;
  bool per_channel_;
  QuantParams input_, output_;
  XnnOperator matmul_;
  std::vector<int8_t> input_q_, output_q_;  // scratch, grown to the largest batch seen
};

// The plain integer reference of LinearInt8::run_int8: exact INT32 accumulation of
// (x - input_zero_point) * w plus the INT32 bias (if any), then requantization by
// input_scale * weight_scale / output_scale with round-to-nearest-even, plus the output zero point,
// clamped to [-128, 127].
std::vector<int8_t> reference_linear_int8(const QuantizedLinear& layer, const std::vector<int8_t>& input, size_t batch,
                                          const std::vector<int32_t>& bias = {});

}  // namespace fedcal
