// A linear layer with INT8 weights and dynamically quantized INT8 activations: no calibration. The
// activations of each token get symmetric scales at run time, absmax / 127, either one per token
// (kPerToken) or one per block of kActivationBlock (32) input channels of each token (kPerBlock, the
// activation side of llama.cpp's Q8_0). The INT8 x INT8 products are summed exactly in INT32 (per
// block) and scaled back to FP32 by the activation's and the weight row's scales:
//   per token:  y[t][o] = s_x[t] * s_w[o] * sum_i q_x[t][i] * q_w[o][i]
//   per block:  y[t][o] = s_w[o] * sum_b s_x[t][b] * sum_{i in b} q_x[t][i] * q_w[o][i]
// The weights are the same QuantizedMatrix a static package holds (per tensor or per channel). A
// token's result does not depend on the other tokens of its batch, so prefill and decode agree
// exactly. XNNPACK 2022 has no dynamically quantized operator, so the products run on our own kernels
// (dot_int8_rows, dot_int8_blocks: vector_math.h), spread over the runtime's threads by blocks of
// output rows.
#pragma once

#include <string>
#include <vector>

#include "models/engine/xnn_runtime.h"
#include "models/quant/scales.h"

namespace fedcal {

enum class ActivationScales { kPerToken, kPerBlock };

class LinearDynamicInt8 : public Linear {
 public:
  // `bias` (FP32, one per output, or empty) is added to the FP32 result.
  LinearDynamicInt8(QuantizedMatrix weights, std::string name, std::vector<float> bias = {},
                    ActivationScales scales = ActivationScales::kPerToken);
  void run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) override;
  // The INT8 values, and the scales when there is one per group (4 bytes per 32 values).
  size_t weight_bytes() const override {
    return weights_.values.size() + (weights_.per_group() ? weights_.scales.size() * sizeof(float) : 0);
  }

 private:
  std::string name_;
  QuantizedMatrix weights_;          // (out, in)
  std::vector<float> row_scales_;    // (out): the weight scale of each output row
  std::vector<float> bias_;          // (out) or empty
  ActivationScales scales_;
  std::vector<int8_t> input_q_;      // (batch, in) scratch
  std::vector<float> input_scales_;  // (batch) or (batch, blocks) scratch
};

// The plain reference of LinearDynamicInt8::run: the same quantization (x times the reciprocal of its
// scale, rounded half to even), products summed in INT64, scaled in double.
std::vector<float> reference_linear_dynamic_int8(const QuantizedMatrix& weights, const std::vector<float>& input, size_t batch,
                                                 ActivationScales scales = ActivationScales::kPerToken);

}  // namespace fedcal
