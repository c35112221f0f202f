#include "models/cli/cli_support.h"

#include "common/error.h"

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/resource.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <set>
#include <thread>

#include "common/file_util.h"
#include "models/engine/generation.h"
#include "models/quant/calibration.h"
#include "models/quant/importance.h"
#include "models/quant/quantize.h"

namespace fedcal::cli {
namespace fs = std::filesystem;

void add_model_options(CLI::App& command, ModelOptions& options, bool with_tokenizer) {
  command.add_option("-m,--model", options.model, "Model: llama2.c .bin file, Hugging Face folder, GGUF file (F32/F16/BF16/Q8_0) or fedcal package")->required();
  if (with_tokenizer) {
    command.add_option("--tokenizer", options.tokenizer,
                       "Tokenizer file (llama2.c tokenizer.bin, sentencepiece .model or tokenizer.json); "
                       "required for llama2.c checkpoints");
  }
  command.add_option(
      "--public-key", options.public_key,
      "Ed25519 public key (PEM) that fedcal packages must be signed with; unsigned or altered packages are refused");
  command.add_option("-t,--threads", options.threads, "Worker threads for XNNPACK and attention (default: one per 16M parameters, at most the physical cores)")
      ->check(CLI::Range(0, 1024));
}

void add_quantization_options(CLI::App& command, QuantizationOptions& options) {
  command.add_option("--stats", options.stats, "Run the model in static INT8 (W8A8) with scales from this statistics file");
  command.add_option("--method", options.method, "Scale method: minmax, percentile:P, entropy, mse")->capture_default_str();
  command.add_flag("--per-channel,!--per-tensor", options.per_channel,
                   "INT8 weights with one scale per output channel, or per tensor (the default, but quantize's recipe's)");
  command.add_flag("--weight-groups", options.weight_groups,
                   "INT8 weights with one scale per 32 input channels of each row (llama.cpp Q8_0's blocks); with "
                   "--activations dynamic or dynamic-blocks on an FP32 model (not in packages yet)");
  command.add_flag("--asymmetric", options.asymmetric, "Activations with a zero point (default: symmetric)");
  command
      .add_option("--trim-share", options.trim_share,
                  "Take this share of each point's values off the top of its histogram before the scale method runs (what "
                  "a round's trim_agents K does with K x one agent's most tokens / the round's tokens): to measure its cost")
      ->check(CLI::Range(0.0, 0.49));
  command
      .add_option("--keep-fp32", options.keep_fp32,
                  "Linear layers (layers.3.w2, classifier) or layers (layers.3) to keep in FP32")
      ->delimiter(',');
  command
      .add_option("--fine-grained", options.fine_grained,
                  "Linear layers or layers to run in the fine-grained mode (weights in groups of 32, activations per "
                  "block of 32 at run time) next to the static INT8 ones")
      ->delimiter(',');
  command
      .add_option("--weight-bits", options.weight_bits,
                  "4: every linear layer in 4-bit weights (groups of 32 with a binary16 scale, llama.cpp Q4_0's grid; "
                  "activations per block of 32 at run time), rounded to the least importance-weighted error when --stats "
                  "holds importance sums (calibrate --importance), plainly otherwise; a layer whose width is not a "
                  "multiple of 32 stays fine-grained INT8 (and is named); 5: the same with 5-bit weights (32 levels, "
                  "llama.cpp Q5_0's grid with --int4-grid uniform; 5.5 bits per weight in the package, run as INT8)")
      ->check(CLI::IsMember({8, 5, 4}))
      ->capture_default_str();
  command
      .add_option("--four-bit", options.four_bit,
                  "Linear layers or layers in 4-bit weights (as --weight-bits 4, for these only); one whose width is not a "
                  "multiple of 32 is refused")
      ->delimiter(',');
  command
      .add_option("--five-bit", options.five_bit,
                  "Linear layers or layers in 5-bit weights (as --weight-bits 5, for these only; before --four-bit), "
                  "refused alike")
      ->delimiter(',');
  command
      .add_option("--int4-grid", options.int4_grid,
                  "The 16 levels of 4-bit weights (and the 32 of 5-bit ones): non-uniform (denser near 0: less error; package "
                  "types qgnl4, qgnl5) or uniform (llama.cpp Q4_0's and Q5_0's grids; qgint4, qgint5)")
      ->transform(CLI::CheckedTransformer(int4_grid_choices(), CLI::ignore_case))
      ->default_str(int4_grid_name(Int4Grid::kNonUniform));
  command
      .add_option("--int4-rounding", options.int4_rounding,
                  "How each group of 32 gets its 4-bit scale: search (the least error, importance-weighted with --stats) or "
                  "absmax (the extreme on the lowest level, nearest levels: the rule models/train/qat_int4.py trains "
                  "with, so a QAT checkpoint keeps its trained rounding; takes no importance)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, Int4Rounding>{{"search", Int4Rounding::kSearch}, {"absmax", Int4Rounding::kAbsmax}},
          CLI::ignore_case))
      ->default_str("search");
  command
      .add_option("--fallback", options.fallback,
                  "Where --auto-fp32 and --target-kl move the layers they take out of static INT8 (or of 4 bits): fp32, "
                  "fine-grained (about a quarter of FP32's bytes), or 5-bit (from --weight-bits 4: 5.5 bits per weight "
                  "instead of 4.5)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, LayerFallback>{
              {"fp32", LayerFallback::kFp32}, {"fine-grained", LayerFallback::kFineGrained}, {"5-bit", LayerFallback::kFiveBit}},
          CLI::ignore_case))
      ->default_str("fp32");
  command
      .add_option("--auto-fp32", options.auto_fp32,
                  "Keep the K linear layers whose INT8 alone moves the output most (KL vs FP32) in FP32")
      ->check(CLI::Range(0, 100000));
  command
      .add_option("--target-kl", options.target_kl,
                  "Take the fewest linear layers out of static INT8 (to --fallback), most sensitive first, that bring the "
                  "mean KL vs FP32 on --sensitivity-text to at most this: nats per token (e.g. 0.001), 'dynamic' for "
                  "the calibration-free dynamic baseline's KL on the same text, or 'dynamic*F' for F times it (a margin, e.g. 0.8)")
      ->check([](const std::string& text) {
        try {
          KlTarget::parse(text);
          return std::string();
        } catch (const Error& error) {
          return std::string(error.what());
        }
      });
  command.add_flag("--clip-search", options.clip_search,
                   "Choose each quantization point's scale method (--method, minmax, percentile:99.9/99.99/99.999, mse, "
                   "entropy) by the KL vs FP32 on --sensitivity-text, point by point, before --auto-fp32 / --target-kl");
  command.add_option("--baseline-model", options.baseline_model,
                     "The model whose dynamic INT8 --target-kl dynamic measures (default: the model being quantized); for a "
                     "smoothed model, the original it was smoothed from")
      ->check(CLI::ExistingPath);
  command
      .add_option("--sensitivity-text", options.sensitivity_text,
                  "Text (one context window is used) for --auto-fp32, --target-kl and --clip-search (default: 8 documents "
                  "the FP32 model samples itself)")
      ->check(CLI::ExistingFile);
  command
      .add_option("--activations", options.activations,
                  "static: at the scales of the package or of --stats (calibrated); dynamic: per token at run time, "
                  "no statistics needed (the calibration-free baseline); dynamic-blocks: per block of 32 channels of "
                  "each token at run time (llama.cpp Q8_0's activations: the fine-grained mode)")
      ->transform(CLI::CheckedTransformer(
          std::map<std::string, ActivationQuantization>{{"static", ActivationQuantization::kStatic},
                                                        {"dynamic", ActivationQuantization::kDynamic},
                                                        {"dynamic-blocks", ActivationQuantization::kDynamicBlocks}},
          CLI::ignore_case))
      ->default_str("static");
  std::map<std::string, Int8Kernel> kernels;
  std::string names;
  for (const Int8Kernel kernel : int8_kernels_supported()) {
    kernels.emplace(int8_kernel_name(kernel), kernel);
    names += (names.empty() ? "" : ", ") + std::string(int8_kernel_name(kernel));
  }
  command
      .add_option("--int8-kernel", options.int8_kernel,
                  "Kernel of the layers with activations quantized at run time (dynamic, dynamic-blocks, weight groups); "
                  "default: the fastest this CPU runs. Here: " + names)
      ->transform(CLI::CheckedTransformer(kernels));
}

LoadedModel load_model_with(const ModelOptions& options) {
  if (!options.public_key) return load_model(options.model);
  const SigningKey key = SigningKey::read_public_key(*options.public_key);
  return load_model(options.model, &key);
}

QuantizeOptions weight_options(const QuantizationOptions& options) {
  QuantizeOptions quantize;
  quantize.per_channel = options.per_channel;
  quantize.per_group = options.weight_groups;
  quantize.keep_fp32 = std::set<std::string>(options.keep_fp32.begin(), options.keep_fp32.end());
  quantize.fine_grained = std::set<std::string>(options.fine_grained.begin(), options.fine_grained.end());
  quantize.weight_bits = options.weight_bits;
  quantize.four_bit = std::set<std::string>(options.four_bit.begin(), options.four_bit.end());
  quantize.five_bit = std::set<std::string>(options.five_bit.begin(), options.five_bit.end());
  quantize.four_bit_grid = options.int4_grid;
  quantize.four_bit_rounding = options.int4_rounding;
  return quantize;
}

std::map<std::string, Int4Grid> int4_grid_choices() {
  std::map<std::string, Int4Grid> choices;
  for (const Int4Grid grid : {Int4Grid::kNonUniform, Int4Grid::kUniform}) choices[int4_grid_name(grid)] = grid;
  return choices;
}

void prepare_four_bit(QuantizeOptions& quantize, const CalibrationStats* stats, const std::string& stats_path,
                      const ModelConfig& config) {
  if (quantize.weight_bits == 8 && quantize.four_bit.empty() && quantize.five_bit.empty()) return;
  if (quantize.four_bit_rounding == Int4Rounding::kAbsmax) {
    if (stats != nullptr && stats->has_importance())
      std::fprintf(stderr, "[4-bit] %s: importance sums not used: --int4-rounding absmax is a fixed rule\n", stats_path.c_str());
  } else if (stats != nullptr && stats->has_importance()) {
    quantize.importance = with_context([&] { return stats_path; }, [&] { return linear_importance(*stats, config); });
  } else {
    std::fprintf(stderr,
                 "[4-bit] %s: 4-bit weights rounded plainly (importance-weighted rounding needs --stats with importance sums: "
                 "calibrate --importance)\n",
                 stats != nullptr ? stats_path.c_str() : "no --stats");
  }
  for (const std::string& layer : four_bit_skipped(config, quantize))
    std::fprintf(stderr, "[%d-bit] %s stays fine-grained INT8: its input width is not a multiple of 32\n", quantize.weight_bits,
                 layer.c_str());
}

namespace {

constexpr int kSampledDocuments = 8;
constexpr int kSampledTokens = 256;  // per document, at most

// What --auto-fp32, --target-kl and --clip-search measure on: --sensitivity-text, or without it text
// the FP32 model samples itself (deterministic).
std::vector<int> sensitivity_tokens(const LoadedModel& loaded, const QuantizationOptions& options, const Tokenizer* tokenizer,
                                    const XnnRuntime& runtime, const char* option) {
  if (tokenizer == nullptr) fail("{} needs a tokenizer (--tokenizer)", option);
  if (options.sensitivity_text) return tokenizer->encode(read_utf8_text_file(*options.sensitivity_text), true);
  Transformer fp32(loaded.model, runtime);
  std::vector<int> tokens;
  for (const std::vector<int>& document :
       sample_documents(fp32, *tokenizer, kSampledDocuments, std::min(kSampledTokens, loaded.model.config.max_seq_len)))
    tokens.insert(tokens.end(), document.begin(), document.end());
  std::fprintf(stderr, "[sensitivity] no --sensitivity-text: %s measures on %zu tokens the FP32 model sampled (%d documents)\n",
               option, tokens.size(), kSampledDocuments);
  return tokens;
}

}  // namespace

QuantizedLinears quantize_with(const LoadedModel& loaded, const QuantizationOptions& options, const Tokenizer* tokenizer,
                               const XnnRuntime& runtime, PackageProvenance& provenance) {
  const CalibrationStats stats = read_stats(options.stats.value());
  provenance.source_model_sha256 = model_fingerprint(loaded.model);
  if (stats.model_sha256 != provenance.source_model_sha256) {
    fail("{}: statistics were recorded on another model than {}", *options.stats, loaded.path);
  }
  QuantizeOptions quantize = weight_options(options);
  prepare_four_bit(quantize, &stats, *options.stats, loaded.model.config);
  quantize.method = ScaleMethodSpec::parse(options.method);
  quantize.asymmetric = options.asymmetric;
  quantize.trim_share = options.trim_share;
  if (options.auto_fp32 > 0 && options.target_kl) fail("--auto-fp32 and --target-kl both choose the FP32 layers: give one");
  if (options.clip_search) {
    const std::vector<int> tokens = sensitivity_tokens(loaded, options, tokenizer, runtime, "--clip-search");
    std::vector<ScaleMethodSpec> candidates;
    for (const char* method : {"minmax", "percentile:99.9", "percentile:99.99", "percentile:99.999", "mse", "entropy"})
      candidates.push_back(ScaleMethodSpec::parse(method));
    const ClippingChoice choice = with_context([&] { return *options.stats; }, [&] {
      return choose_clipping(loaded.model, stats, quantize, tokens, runtime, candidates);
    });
    std::string changed;
    for (const auto& [point, method] : choice.point_methods)
      changed += fmt::format("{}{} {}", changed.empty() ? "" : ", ", stats.points.at(static_cast<size_t>(point)), method.to_string());
    std::fprintf(stderr, "[clip-search] KL %.3g -> %.3g on the window: %zu point(s) off %s%s%s\n", choice.kl_before, choice.kl_after,
                 choice.point_methods.size(), quantize.method.to_string().c_str(), changed.empty() ? "" : ": ", changed.c_str());
    quantize.point_methods = choice.point_methods;
  }
  if (options.target_kl) {
    const std::vector<int> tokens = sensitivity_tokens(loaded, options, tokenizer, runtime, "--target-kl");
    std::optional<LoadedModel> baseline;
    if (options.baseline_model) {
      baseline = load_model(*options.baseline_model);
      if (!baseline->int8.empty()) fail("--baseline-model {}: an FP32 model is needed", *options.baseline_model);
    }
    const MixedPrecisionChoice choice = with_context([&] { return *options.stats; }, [&] {
      return choose_mixed_precision(loaded.model, stats, quantize, tokens, runtime, KlTarget::parse(*options.target_kl), options.fallback,
                                    baseline ? &baseline->model : nullptr);
    });
    std::fprintf(stderr, "[target-kl] %zu layer(s) %s for KL %.3g <= %.3g%s%s%s\n", choice.mixed.layers.size(),
                 fallback_name(options.fallback), choice.mixed.mean_kl, choice.target_kl,
                 options.target_kl->rfind("dynamic", 0) == 0 ? " (the dynamic baseline's)" : "",
                 choice.mixed.layers.empty() ? "" : ": ", fmt::format("{}", fmt::join(choice.mixed.layers, ", ")).c_str());
    if (!choice.mixed.fine_grained_layers.empty())
      std::fprintf(stderr, "[target-kl] and %zu of them on to fine-grained INT8: %s\n", choice.mixed.fine_grained_layers.size(),
                   fmt::format("{}", fmt::join(choice.mixed.fine_grained_layers, ", ")).c_str());
  }
  if (options.auto_fp32 > 0) {
    const std::vector<int> tokens = sensitivity_tokens(loaded, options, tokenizer, runtime, "--auto-fp32");
    const auto ranking = with_context([&] { return *options.stats; },
                                      [&] { return measure_sensitivity(loaded.model, stats, quantize, tokens, runtime); });
    for (int i = 0; i < options.auto_fp32 && i < static_cast<int>(ranking.size()); ++i) {
      std::fprintf(stderr, "[auto-fp32] %s %s (KL %.3g when INT8 alone)\n", ranking[i].name.c_str(),
                   fallback_name(options.fallback), ranking[i].mean_kl);
      fallback_layers(quantize, options.fallback).insert(ranking[i].name);
    }
  }
  QuantizedLinears int8 =
      with_context([&] { return *options.stats; }, [&] { return quantize_model(loaded.model, stats, quantize); });
  provenance = quantization_provenance(quantize, stats);
  return int8;
}

QuantizedLinears quantize_with(const LoadedModel& loaded, const QuantizationOptions& options, const ModelOptions& model_options,
                               PackageProvenance& provenance) {
  std::unique_ptr<Tokenizer> text_tokenizer;
  if (options.auto_fp32 > 0 || options.target_kl || options.clip_search) text_tokenizer = load_tokenizer(loaded, model_options.tokenizer);
  XnnRuntime runtime(resolve_threads(model_options.threads, loaded.model.config.parameter_count()));
  return quantize_with(loaded, options, text_tokenizer.get(), runtime, provenance);
}

namespace {

// make_transformer's two forms: with `consume` (the same object as `loaded`), the weights move into the
// Transformer as it packs them.
std::unique_ptr<Transformer> build_transformer(const LoadedModel& loaded, LoadedModel* consume, const XnnRuntime& runtime,
                                               const QuantizationOptions& options, const Tokenizer* tokenizer,
                                               TransformerOptions transformer_options) {
  transformer_options.activations = options.activations;
  transformer_options.int8_kernel = options.int8_kernel;
  const bool dynamic = is_dynamic(options.activations);
  QuantizedLinears computed;
  const bool packaged = !loaded.int8.empty();
  if (packaged) {
    if (options.stats) fail("{}: the package is already quantized; --stats applies to FP32 models", loaded.path);
  } else if (dynamic) {
    if (options.stats) fail("--activations dynamic needs no statistics: leave out --stats {}", *options.stats);
    if (options.auto_fp32 > 0) fail("--auto-fp32 ranks layers by their static INT8 error: use --keep-fp32 with --activations dynamic");
    QuantizeOptions quantize = weight_options(options);
    prepare_four_bit(quantize, nullptr, "", loaded.model.config);
    computed = quantize_model_weights(loaded.model, quantize);
  } else if (options.stats) {
    PackageProvenance provenance;
    computed = quantize_with(loaded, options, tokenizer, runtime, provenance);
  }
  if (consume != nullptr) {
    return Transformer::consume(std::move(consume->model), runtime, transformer_options,
                                std::move(packaged ? consume->int8 : computed));
  }
  const QuantizedLinears& int8 = packaged ? loaded.int8 : computed;
  return std::make_unique<Transformer>(loaded.model, runtime, transformer_options, int8.empty() ? nullptr : &int8);
}

}  // namespace

std::unique_ptr<Transformer> make_transformer(const LoadedModel& loaded, const XnnRuntime& runtime,
                                              const QuantizationOptions& options, const Tokenizer* tokenizer,
                                              TransformerOptions transformer_options) {
  return build_transformer(loaded, nullptr, runtime, options, tokenizer, transformer_options);
}

std::unique_ptr<Transformer> make_transformer(LoadedModel&& loaded, const XnnRuntime& runtime, const QuantizationOptions& options,
                                              const Tokenizer* tokenizer, TransformerOptions transformer_options) {
  return build_transformer(loaded, &loaded, runtime, options, tokenizer, transformer_options);
}

size_t peak_resident_bytes() {
  struct rusage usage {};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<size_t>(usage.ru_maxrss) * 1024;  // Linux reports kilobytes
}

size_t model_file_bytes(const std::string& path) {
  std::error_code ec;
  if (!fs::is_directory(path, ec)) return fs::file_size(path, ec);
  size_t total = 0;
  for (const auto& entry : fs::directory_iterator(path, ec)) {
    if (entry.is_regular_file(ec)) total += entry.file_size(ec);
  }
  return total;
}

}  // namespace fedcal::cli
