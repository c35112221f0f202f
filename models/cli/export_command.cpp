#include <cstdio>
#include <memory>
#include <optional>

#include <nlohmann/json.hpp>

#include "common/error.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/format/runtime_export.h"
#include "models/quant/calibration_stats.h"

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

// The static INT8 layers an export carries: a package's own, or quantized now from --stats.
QuantizedLinears static_int8_layers(const LoadedModel& loaded, const ExportOptions& options) {
  if (is_dynamic(options.quantization.activations))
    fail("--format {} carries static activation scales; --activations dynamic has none to export", options.format);
  if (!loaded.int8.empty()) {
    if (options.quantization.stats) fail("{}: an INT8 package already has its scales; --stats is for an FP32 model", loaded.path);
    return loaded.int8;
  }
  if (!options.quantization.stats)
    fail("{}: an FP32 model; --format {} needs INT8 scales: give --stats (or export a package)", loaded.path, options.format);
  PackageProvenance provenance;
  return quantize_with(loaded, options.quantization, options.model, provenance);
}

void run_export(const ExportOptions& options) {
  const LoadedModel loaded = load_model_with(options.model);
  RuntimeExportInput input;
  input.model = &loaded.model;
  input.gguf_type = *parse_ggml_type(options.type);
  input.name = options.name;
  input.tensorrt_version = options.tensorrt_version;
  std::optional<TokenizerFile> tokenizer;
  const RuntimeExportNeeds needs = runtime_export_needs(options.format);
  if (needs.tokenizer) {
    tokenizer = find_tokenizer(loaded, options.model.tokenizer);
    input.tokenizer = &tokenizer->file;
  }
  QuantizedLinears int8;
  if (needs.static_int8) {
    int8 = static_int8_layers(loaded, options);
    input.int8 = &int8;
  }
  // A package to GGUF: its 4-bit (uniform grid) and fine-grained layers as their own Q4_0 and Q8_0 blocks.
  if (options.format == "gguf" && !loaded.int8.empty()) input.int8 = &loaded.int8;
  std::optional<CalibrationStats> stats;
  if (needs.importance) {
    if (!options.quantization.stats) fail("--format {} needs --stats (recorded with calibrate --importance)", options.format);
    stats = read_stats(*options.quantization.stats);
    input.stats = &*stats;
    if (input.name.empty()) input.name = *options.quantization.stats;
  }
  const RuntimeExportSummary summary = write_runtime_export(options.format, options.output, input);
  if (options.json) {
    const nlohmann::json out = {{"format", options.format}, {"output", options.output}, {"bytes", summary.bytes}, {"summary", summary.text}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::fprintf(stderr, "[export] %s -> %s: %s, %.2f MB\n", loaded.path.c_str(), options.output.c_str(), summary.text.c_str(),
               static_cast<double>(summary.bytes) / 1e6);
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
                   "imatrix-gguf: the same in llama.cpp's newer GGUF imatrix format; "
                   "onnx: the FP32 model as an ONNX graph; onnx-qdq: static INT8 as QuantizeLinear/DequantizeLinear pairs "
                   "(a package's scales, or --stats); tensorrt-cache: TensorRT's INT8 calibration cache for the onnx export")
      ->capture_default_str()
      ->check(CLI::IsMember(kRuntimeExportFormats));
  add_quantization_options(*command, options->quantization);
  command->add_option("--tensorrt-version", options->tensorrt_version,
                      "TensorRT version in the cache header, as NV_TENSORRT_VERSION (8602: TensorRT 8.6.2, JetPack 6)")
      ->capture_default_str();
  command
      ->add_option("--type", options->type,
                   "GGUF matrix type: f32, f16, bf16 or q8_0 (norms stay F32); a package's 4-bit (uniform grid) and "
                   "fine-grained layers keep their own blocks (Q4_0, Q8_0), its FP32 matrices take this type")
      ->capture_default_str()
      ->check(CLI::IsMember({"f32", "f16", "bf16", "q8_0"}));
  command->add_option("--name", options->name, "general.name of the GGUF file; the dataset name of an imatrix");
  command->add_option("-o,--output", options->output, "File to write")->required();
  command->add_flag("--json", options->json, "Print what was written as JSON");
  command->callback([options] { run_export(*options); });
}

}  // namespace fedcal::cli
