#include <cstdio>
#include <memory>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "common/file_util.h"
#include "models/format/gguf_model.h"
#include "models/format/onnx_model.h"
#include "models/format/tensorrt_cache.h"
#include "models/quant/calibration_stats.h"
#include "models/quant/importance.h"

namespace fedcal::cli {
namespace {

struct ExportOptions {
  ModelOptions model;
  QuantizationOptions quantization;  // --stats and how to turn it into scales (onnx-qdq, tensorrt-cache)
  std::string format = "gguf";
  std::string type = "f32";
  std::string name;
  int tensorrt_version = 8602;
  std::string output;
  bool json = false;
};

void print_summary(const ExportOptions& options, nlohmann::json out, const std::string& line) {
  if (options.json) {
    out["format"] = options.format;
    out["output"] = options.output;
    std::printf("%s\n", out.dump(2).c_str());
  } else {
    std::fprintf(stderr, "[export] %s\n", line.c_str());
  }
}

// The static INT8 layers an export carries: a package's own, or quantized now from --stats.
QuantizedLinears static_int8_layers(const LoadedModel& loaded, const ExportOptions& options) {
  if (options.quantization.activations == ActivationQuantization::kDynamic)
    fail("--format {} carries static activation scales; --activations dynamic has none to export", options.format);
  if (!loaded.int8.empty()) {
    if (options.quantization.stats) fail("{}: an INT8 package already has its scales; --stats is for an FP32 model", loaded.path);
    return loaded.int8;
  }
  if (!options.quantization.stats) fail("{}: an FP32 model; --format {} needs its INT8 scales: give --stats (or export a package)", loaded.path, options.format);
  PackageProvenance provenance;
  return quantize_with(loaded, options.quantization, options.model, provenance);
}

// The model as an ONNX graph: FP32 (onnx) or static INT8 in QDQ form (onnx-qdq).
void run_onnx_export(const ExportOptions& options) {
  const LoadedModel loaded = load_model_with(options.model);
  QuantizedLinears int8;
  if (options.format == "onnx-qdq") {
    int8 = static_int8_layers(loaded, options);
  } else if (!loaded.int8.empty()) {
    fail("{}: an INT8 package has no FP32 weights for its INT8 layers; export it with --format onnx-qdq, or export its source model", loaded.path);
  }
  const OnnxExportSummary summary = write_onnx_model(options.output, loaded.model, int8);
  print_summary(options,
                {{"bytes", summary.bytes}, {"int8_linears", summary.int8_linears}, {"fp32_linears", summary.fp32_linears},
                 {"nodes", summary.nodes}, {"opset", 17}},
                fmt::format("{} -> {}: ONNX opset 17, {} INT8 (QDQ) and {} FP32 linears, {} nodes, {:.2f} MB", loaded.path, options.output,
                            summary.int8_linears, summary.fp32_linears, summary.nodes, static_cast<double>(summary.bytes) / 1e6));
}

// TensorRT's calibration cache, keyed by the tensor names of the FP32 ONNX export.
void run_tensorrt_export(const ExportOptions& options) {
  const LoadedModel loaded = load_model_with(options.model);
  const std::vector<TensorrtCacheEntry> entries = tensorrt_cache_entries(loaded.model.config, static_int8_layers(loaded, options));
  write_file_atomically(options.output, tensorrt_cache_text(entries, options.tensorrt_version));
  print_summary(options, {{"entries", entries.size()}, {"tensorrt_version", options.tensorrt_version}},
                fmt::format("{} -> {}: TensorRT calibration cache, {} tensors (names of the FP32 ONNX export)", loaded.path, options.output,
                            entries.size()));
}

// llama.cpp's importance matrix from statistics recorded with importance sums.
void run_imatrix_export(const ExportOptions& options) {
  const std::optional<std::string>& stats_path = options.quantization.stats;
  if (!stats_path) fail("--format imatrix needs --stats (recorded with calibrate --importance)");
  const LoadedModel loaded = load_model_with(options.model);
  const CalibrationStats stats = read_stats(*stats_path);
  const Imatrix imatrix = imatrix_from_stats(stats, loaded.model.config, options.name.empty() ? *stats_path : options.name);
  const std::vector<std::byte> bytes = serialize_imatrix(imatrix);
  write_file_atomically(options.output, bytes);
  if (options.json) {
    const nlohmann::json out = {{"format", "imatrix"},     {"output", options.output},          {"bytes", bytes.size()},
                                {"entries", imatrix.entries.size()}, {"ncall", imatrix.last_call}, {"tokens", stats.tokens}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::fprintf(stderr, "[export] %s -> %s: llama.cpp imatrix, %zu matrices, %d sequences, %llu tokens\n", stats_path->c_str(),
               options.output.c_str(), imatrix.entries.size(), imatrix.last_call, static_cast<unsigned long long>(stats.tokens));
}

void run_export(const ExportOptions& options) {
  if (options.format == "imatrix") return run_imatrix_export(options);
  if (options.format == "onnx" || options.format == "onnx-qdq") return run_onnx_export(options);
  if (options.format == "tensorrt-cache") return run_tensorrt_export(options);
  LoadedModel loaded = load_model_with(options.model);
  if (!loaded.int8.empty()) {
    fail("{}: an INT8 package; export its FP32 model (GGUF Q8_0 quantizes it in llama.cpp's own blocks)", loaded.path);
  }
  const TokenizerFile tokenizer = find_tokenizer(loaded, options.model.tokenizer);
  GgufExportOptions gguf;
  gguf.weights = *parse_ggml_type(options.type);
  gguf.name = options.name;
  const GgufExportSummary summary = write_gguf_model(options.output, loaded.model, tokenizer.file, gguf);
  if (options.json) {
    const nlohmann::json out = {{"format", options.format},
                                {"type", ggml_type_name(gguf.weights)},
                                {"output", options.output},
                                {"bytes", summary.bytes},
                                {"matrices", summary.matrices_in_requested_type},
                                {"matrices_f16_fallback", summary.matrices_in_f16},
                                {"tokenizer", tokenizer.name}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::fprintf(stderr, "[export] %s -> %s: GGUF, %d matrices %s%s, tokenizer from %s, %.2f MB\n", loaded.path.c_str(),
               options.output.c_str(), summary.matrices_in_requested_type, ggml_type_name(gguf.weights).c_str(),
               summary.matrices_in_f16 ? fmt::format(" ({} in F16: rows not whole blocks)", summary.matrices_in_f16).c_str() : "",
               tokenizer.name.c_str(), static_cast<double>(summary.bytes) / 1e6);
}

}  // namespace

void add_export_command(CLI::App& app) {
  auto options = std::make_shared<ExportOptions>();
  CLI::App* command = app.add_subcommand(
      "export",
      "Write a model or its calibration in another runtime's format: gguf (llama.cpp / ollama), imatrix (llama.cpp), "
      "onnx and onnx-qdq (ONNX Runtime, OpenVINO, TensorRT), tensorrt-cache (trtexec --calib)");
  add_model_options(*command, options->model);
  command
      ->add_option("--format", options->format,
                   "gguf: the model for llama.cpp / ollama; imatrix: llama.cpp's importance matrix (.dat) from --stats; "
                   "onnx: the FP32 model as an ONNX graph; onnx-qdq: static INT8 as QuantizeLinear/DequantizeLinear pairs "
                   "(a package's scales, or --stats); tensorrt-cache: TensorRT's INT8 calibration cache for the onnx export")
      ->capture_default_str()
      ->check(CLI::IsMember({"gguf", "imatrix", "onnx", "onnx-qdq", "tensorrt-cache"}));
  add_quantization_options(*command, options->quantization);
  command->add_option("--tensorrt-version", options->tensorrt_version,
                      "TensorRT version in the cache header, as NV_TENSORRT_VERSION (8602: TensorRT 8.6.2, JetPack 6)")
      ->capture_default_str();
  command->add_option("--type", options->type, "GGUF matrix type: f32, f16, bf16 or q8_0 (norms stay F32)")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  command->add_option("--name", options->name, "general.name of the GGUF file; the dataset name of an imatrix");
  command->add_option("-o,--output", options->output, "File to write")->required();
  command->add_flag("--json", options->json, "Print what was written as JSON");
  command->callback([options] { run_export(*options); });
}

}  // namespace fedcal::cli
