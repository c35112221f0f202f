#include "models/format/runtime_export.h"

#include <algorithm>

#include "common/error.h"
#include "common/file_util.h"
#include "models/format/gguf_model.h"
#include "models/format/onnx_model.h"
#include "models/format/tensorrt_cache.h"
#include "models/quant/importance.h"

namespace fedcal {

namespace {

// The first tensor of `model` without FP32 values (a package's quantized layer), or null.
const ConstTensorRef* missing_fp32(const Model& model, const std::vector<ConstTensorRef>& tensors) {
  for (const ConstTensorRef& tensor : tensors) {
    if (tensor.data->size() != size_t(tensor.rows) * tensor.cols &&
        !(tensor.name == "classifier" && model.config.shared_classifier))
      return &tensor;
  }
  return nullptr;
}

const Model& fp32_model(const RuntimeExportInput& input, const std::string& format) {
  if (input.model == nullptr) fail("{}: needs the model", format);
  const std::vector<ConstTensorRef> tensors = list_tensors(*input.model);
  if (const ConstTensorRef* missing = missing_fp32(*input.model, tensors))
    fail("{}: {} has no FP32 values (an INT8 package): export the FP32 model it was quantized from", format, missing->name);
  return *input.model;
}

const QuantizedLinears& static_int8(const RuntimeExportInput& input, const std::string& format) {
  if (input.int8 == nullptr || input.int8->empty())
    fail("{}: needs static INT8 layers (a package quantized with statistics, or --stats)", format);
  return *input.int8;
}

RuntimeExportSummary write_gguf(const std::string& format, const std::string& path, const RuntimeExportInput& input) {
  if (input.tokenizer == nullptr) fail("gguf: needs the model's tokenizer");
  GgufExportOptions options;
  options.weights = input.gguf_type;
  options.name = input.name;
  // A package (its quantized layers hold no FP32 values): those layers as their own blocks.
  if (input.model == nullptr) fail("gguf: needs the model");
  const bool package = missing_fp32(*input.model, list_tensors(*input.model)) != nullptr;
  if (package && input.int8 != nullptr) options.quantized = input.int8;
  const GgufExportSummary summary = write_gguf_model(
      path, package && input.int8 != nullptr ? *input.model : fp32_model(input, format), *input.tokenizer, options);
  const std::string own =
      package ? fmt::format(", the package's own blocks: {} Q4_0 and {} Q8_0", summary.package_q4_0, summary.package_q8_0) : "";
  return {summary.bytes,
          fmt::format("GGUF, {} matrices {}{}{}", summary.matrices_in_requested_type, ggml_type_name(options.weights),
                      summary.matrices_in_f16 ? fmt::format(" ({} in F16: rows not whole blocks)", summary.matrices_in_f16) : "",
                      own)};
}

RuntimeExportSummary write_imatrix(const std::string& format, const std::string& path, const RuntimeExportInput& input) {
  if (input.stats == nullptr || input.model == nullptr)
    fail("{}: needs the model and statistics recorded with importance sums", format);
  const Imatrix imatrix = imatrix_from_stats(*input.stats, input.model->config, input.name);
  const std::vector<std::byte> bytes = serialize_imatrix(imatrix);
  write_file_atomically(path, bytes);
  return {bytes.size(), fmt::format("llama.cpp imatrix, {} matrices, {} sequences, {} tokens", imatrix.entries.size(),
                                    imatrix.last_call, input.stats->tokens)};
}

RuntimeExportSummary write_imatrix_gguf(const std::string& format, const std::string& path, const RuntimeExportInput& input) {
  if (input.stats == nullptr || input.model == nullptr)
    fail("{}: needs the model and statistics recorded with importance sums", format);
  const std::vector<std::byte> bytes = imatrix_gguf(*input.stats, input.model->config, input.name).serialize();
  write_file_atomically(path, bytes);
  return {bytes.size(),
          fmt::format("llama.cpp imatrix (GGUF), {} sequences, {} tokens", input.stats->sequences, input.stats->tokens)};
}

// "onnx": the FP32 model; "onnx-qdq": with its static INT8 layers as QuantizeLinear/DequantizeLinear.
RuntimeExportSummary write_onnx(const std::string& format, const std::string& path, const RuntimeExportInput& input) {
  const bool qdq = format == "onnx-qdq";
  if (input.model == nullptr) fail("{}: needs the model", format);
  const QuantizedLinears none;
  const OnnxExportSummary summary =
      write_onnx_model(path, qdq ? *input.model : fp32_model(input, format), qdq ? static_int8(input, format) : none);
  return {summary.bytes, fmt::format("ONNX opset 17, {} INT8 (QDQ) and {} FP32 linears, {} nodes", summary.int8_linears,
                                     summary.fp32_linears, summary.nodes)};
}

RuntimeExportSummary write_tensorrt_cache(const std::string& format, const std::string& path, const RuntimeExportInput& input) {
  if (input.model == nullptr) fail("{}: needs the model", format);
  const std::vector<TensorrtCacheEntry> entries = tensorrt_cache_entries(input.model->config, static_int8(input, format));
  const std::string text = tensorrt_cache_text(entries, input.tensorrt_version);
  write_file_atomically(path, text);
  return {text.size(), fmt::format("TensorRT calibration cache, {} tensors (names of the FP32 ONNX export)", entries.size())};
}

// Every export format, defined once: its name (as the CLIs and round settings take it), the file
// extension the coordinator's artifact store gives it, what it reads (RuntimeExportNeeds) and its writer.
struct RuntimeExportFormat {
  const char* name;
  const char* extension;
  RuntimeExportNeeds needs;
  RuntimeExportSummary (*write)(const std::string& format, const std::string& path, const RuntimeExportInput& input);
};
//                                      needs: static INT8, symmetric, importance, tokenizer
constexpr RuntimeExportFormat kFormats[] = {
    {"gguf", ".gguf", {false, false, false, true}, write_gguf},
    {"imatrix", ".imatrix.dat", {false, false, true, false}, write_imatrix},
    {"imatrix-gguf", ".imatrix.gguf", {false, false, true, false}, write_imatrix_gguf},
    {"onnx", ".onnx", {false, false, false, false}, write_onnx},
    {"onnx-qdq", ".qdq.onnx", {true, false, false, false}, write_onnx},
    {"tensorrt-cache", ".trt-calib.cache", {true, true, false, false}, write_tensorrt_cache},
};

const RuntimeExportFormat& format_named(const std::string& name) {
  for (const RuntimeExportFormat& format : kFormats) {
    if (name == format.name) return format;
  }
  fail("unknown export format '{}' (known: {})", name, fmt::join(kRuntimeExportFormats, ", "));
}

}  // namespace

const std::vector<std::string> kRuntimeExportFormats = [] {
  std::vector<std::string> names;
  for (const RuntimeExportFormat& format : kFormats) names.emplace_back(format.name);
  return names;
}();

std::string runtime_export_extension(const std::string& format) { return format_named(format).extension; }

RuntimeExportNeeds runtime_export_needs(const std::string& format) { return format_named(format).needs; }

bool any_export_needs(const std::vector<std::string>& formats, bool RuntimeExportNeeds::*need) {
  return std::any_of(formats.begin(), formats.end(),
                     [&](const std::string& format) { return runtime_export_needs(format).*need; });
}

RuntimeExportSummary write_runtime_export(const std::string& format, const std::string& path, const RuntimeExportInput& input) {
  return with_context([&] { return format + " export to " + path; },
                      [&] { return format_named(format).write(format, path, input); });
}

}  // namespace fedcal
