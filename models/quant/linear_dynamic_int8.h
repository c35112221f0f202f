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
// (engine/dot_int8.h: the weights are packed for the fastest one this CPU runs, or the one asked for),
// spread over the runtime's threads by 32 output rows at a time.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/engine/dot_int8.h"
#include "models/engine/xnn_runtime.h"
#include "models/quant/scales.h"

namespace fedcal {

enum class ActivationScales { kPerToken, kPerBlock };

// A run's quantized input, grown to the largest batch seen. Layers that run one after another (a
// Transformer's) share one: one per layer was ~12 MB of a 4-bit smollm-135m's 64-token prefill.
struct DynamicInt8Scratch {
  std::vector<int8_t> input_q;      // (batch, in padded to blocks)
  std::vector<float> input_scales;  // (batch) or (batch, blocks)
  std::vector<int32_t> block_sums;  // (batch, blocks)
};

class LinearDynamicInt8 : public Linear {
 public:
  // `bias` (FP32, one per output, or empty) is added to the FP32 result. The weights are packed for
  // `kernel` (default: the fastest this CPU runs) a row at a time; the matrix itself is not kept.
  // `scratch` is shared with layers that never run at the same time as this one (default: its own).
  LinearDynamicInt8(const QuantizedMatrix& weights, std::string name, std::vector<float> bias = {},
                    ActivationScales scales = ActivationScales::kPerToken, std::optional<Int8Kernel> kernel = std::nullopt,
                    std::shared_ptr<DynamicInt8Scratch> scratch = nullptr);
  void run(const XnnRuntime& runtime, size_t batch, const float* input, float* output) override;
  // The packed INT8 values (rows padded to 16, columns to 32), and the scales when there is one per
  // group (4 bytes per 32 values).
  size_t weight_bytes() const override { return weights_.bytes(); }
  Int8Kernel kernel() const { return weights_.kernel; }
  // Weight row `row` in FP32 as the products use it (its INT8 values times their scales), read from the
  // packed copy through `values` (in values): a tied token table's lookup.
  void dequantize_row(int row, int8_t* values, float* out) const;

 private:
  std::string name_;
  PackedInt8 weights_;               // (out, in), with the group scales if any
  std::vector<float> row_scales_;    // (out): the weight scale of each output row, without groups
  std::vector<float> bias_;          // (out) or empty
  ActivationScales scales_;
  std::shared_ptr<DynamicInt8Scratch> scratch_;
};

// The plain reference of LinearDynamicInt8::run: the same quantization (x times the reciprocal of its
// scale, rounded half to even), products summed in INT64, scaled in double.
std::vector<float> reference_linear_dynamic_int8(const QuantizedMatrix& weights, const std::vector<float>& input, size_t batch,
                                                 ActivationScales scales = ActivationScales::kPerToken);

}  // namespace fedcal
