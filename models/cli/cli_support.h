// Options and helpers shared by fedcal-model's subcommands.
#pragma once

#include <CLI/CLI.hpp>

#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/quant/quantize.h"

namespace fedcal::cli {

struct ModelOptions {
  std::string model;
  std::optional<std::string> tokenizer;
  std::optional<std::string> public_key;  // verify packages against this Ed25519 key
  int threads = 0;                        // 0: default_threads (models/engine/xnn_runtime.h)
};

// load_model with the --public-key of `options` (if any).
LoadedModel load_model_with(const ModelOptions& options);

// On-the-fly static INT8 quantization from a statistics file (until the model package lands, the way
// to run and measure INT8 models).
struct QuantizationOptions {
  std::optional<std::string> stats;
  std::string method = "percentile:99.99";
  bool per_channel = false;
  bool weight_groups = false;  // INT8 weights with a scale per 32 input channels (dynamic activations only)
  bool asymmetric = false;
  double trim_share = 0;  // of each point's values, off the top first (what a round's trim_agents does)
  std::vector<std::string> keep_fp32;
  std::vector<std::string> fine_grained;                 // layers in the fine-grained mode
  int weight_bits = 8;                                   // 4 (5): every linear whose width allows it in 4 (5) bits
  std::vector<std::string> four_bit;                     // layers in 4 bits
  std::vector<std::string> five_bit;                     // layers in 5 bits
  Int4Grid int4_grid = Int4Grid::kNonUniform;            // their levels
  Int4Rounding int4_rounding = Int4Rounding::kSearch;    // how their scales are chosen
  LayerFallback fallback = LayerFallback::kFp32;          // where --auto-fp32 / --target-kl move layers
  int auto_fp32 = 0;                            // keep the k most sensitive linears in FP32
  std::optional<std::string> target_kl;         // the fewest sensitive linears out of static INT8 that reach it (KlTarget)
  bool clip_search = false;                     // choose each point's scale method by measured KL
  std::optional<std::string> sensitivity_text;  // text the sensitivity is measured on
  std::optional<std::string> baseline_model;    // where --target-kl dynamic measures (default: the model)
  ActivationQuantization activations = ActivationQuantization::kStatic;
  std::optional<Int8Kernel> int8_kernel = std::nullopt;  // of the dynamic / fine-grained linears; default: the fastest
};
void add_quantization_options(CLI::App& command, QuantizationOptions& options);

// The INT8 layers that `options` ask for (options.stats must be set), with the package provenance
// describing them. `tokenizer` is needed for --auto-fp32.
QuantizedLinears quantize_with(const LoadedModel& loaded, const QuantizationOptions& options, const Tokenizer* tokenizer,
                               const XnnRuntime& runtime, PackageProvenance& provenance);

// quantize_with on a runtime and (for --auto-fp32 / --target-kl) tokenizer of its own.
QuantizedLinears quantize_with(const LoadedModel& loaded, const QuantizationOptions& options, const ModelOptions& model_options,
                               PackageProvenance& provenance);

// What the weights take from `options`: granularity (per tensor, per channel, in groups), 4-bit layers
// and the layers kept in FP32.
QuantizeOptions weight_options(const QuantizationOptions& options);
// With 4-bit layers in `quantize`: the importance sums of `stats` (when given and recorded) as their
// rounding weights, else a note that they are rounded plainly; the layers that stay fine-grained INT8.
// The --int4-grid choices, by their names (int4_grid_name): for CLI11's CheckedTransformer.
std::map<std::string, Int4Grid> int4_grid_choices();
void prepare_four_bit(QuantizeOptions& quantize, const CalibrationStats* stats, const std::string& stats_path,
                      const ModelConfig& config);

// The transformer for `loaded`: a package's own INT8 layers, W8A8 when options.stats is set, else FP32;
// with dynamic activations, a package's INT8 weights or an FP32 model's weights quantized now (no
// statistics), each token's activations quantized at run time.
std::unique_ptr<Transformer> make_transformer(const LoadedModel& loaded, const XnnRuntime& runtime,
                                              const QuantizationOptions& options, const Tokenizer* tokenizer = nullptr,
                                              TransformerOptions transformer_options = {});
// The same for a model not needed afterwards: its weights are freed as they are packed, so loading
// peaks at about one copy of the weights (Transformer::consume); `loaded` is left without weights.
std::unique_ptr<Transformer> make_transformer(LoadedModel&& loaded, const XnnRuntime& runtime, const QuantizationOptions& options,
                                              const Tokenizer* tokenizer = nullptr, TransformerOptions transformer_options = {});

// Adds --model (required), --tokenizer and --threads to `command`.
void add_model_options(CLI::App& command, ModelOptions& options, bool with_tokenizer = true);
// Peak resident set size of this process, in bytes.
size_t peak_resident_bytes();
// Bytes on disk of a model file, or of every file in a model folder.
size_t model_file_bytes(const std::string& path);

}  // namespace fedcal::cli
