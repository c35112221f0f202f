// A model as an ONNX graph (opset 17, IR version 8), FP32 or static INT8 in the QDQ form that ONNX
// Runtime, OpenVINO and TensorRT turn into integer kernels.
//
//   input   input_ids  int64 (batch, sequence)          positions 0 .. sequence-1, causal attention
//   output  logits     float (batch, sequence, vocab)   over the whole sequence (no KV cache inputs)
//
// Every linear is a MatMul by its transposed weights (in, out). A linear listed in `int8` becomes
//   x -> QuantizeLinear -> DequantizeLinear -> MatMul(., DequantizeLinear(W int8 (in, out), axis 1))
//     -> QuantizeLinear -> DequantizeLinear
// with the package's activation scales on both sides (its output requantization, as fedcal's engine
// runs it) and per-tensor or per-output-channel weight scales. An INT8 token table is a
// DequantizeLinear (axis 0) before the Gather. Norms, RoPE (a table of cos / sin per position),
// attention and SwiGLU stay FP32, as in fedcal's engine.
//
// The activation tensors at quantization points carry the points' names ("layers.3.attn_in",
// "layers.3.q_out", ..., "final_in"), in the FP32 graph as the MatMuls' inputs and outputs: the keys
// of a TensorRT calibration cache (tensorrt_cache.h).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "models/format/model.h"
#include "models/quant/linear_int8.h"

namespace fedcal {

struct OnnxExportSummary {
  int int8_linears = 0;  // MatMuls in QDQ form
  int fp32_linears = 0;
  int nodes = 0;
  int initializers = 0;
  uint64_t bytes = 0;
};

// The ModelProto bytes. Linears named in `int8` are QDQ (their FP32 weights in `model` are not read);
// the others FP32. Throws Error if the graph would exceed protobuf's 2 GiB limit (external data is not
// written) or a tensor's shape does not fit the config.
std::vector<std::byte> onnx_from_model(const Model& model, const QuantizedLinears& int8, OnnxExportSummary* summary = nullptr);
OnnxExportSummary write_onnx_model(const std::string& path, const Model& model, const QuantizedLinears& int8);

}  // namespace fedcal
