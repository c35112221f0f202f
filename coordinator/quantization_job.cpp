#include "coordinator/quantization_job.h"

#include <chrono>
#include <span>
#include <thread>

#include <fmt/ranges.h>
#include "common/error.h"
#include "common/file_util.h"

#include "common/signing.h"
#include "coordinator/artifact_store.h"
#include "coordinator/plausibility_check.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/format/runtime_export.h"
#include "models/quant/calibration.h"
#include "models/quant/importance.h"
#include "models/quant/quantize.h"
#include "models/quant/smoothing.h"

namespace fedcal::coordinator {
namespace {

// The coordinator's reference text, tokenized: what smoothing and the target-KL search measure on.
struct ReferenceWindow {
  std::vector<int> tokens;
  const XnnRuntime* runtime = nullptr;
  const Model* baseline = nullptr;  // where target_kl "dynamic" measures (null: the round's model)
};

// Writes a signed package of the model (with `int8` layers; none: FP32) into the artifact store.
BuiltPackage store_package(const LoadedModel& loaded, const QuantizedLinears& int8, const PackageProvenance& provenance,
                           const SigningKey& key, const std::string& artifacts_dir, std::string description) {
  PackageWriteOptions write_options;
  write_options.signing_key = &key;
  const StoredArtifact stored = ArtifactStore(artifacts_dir).add_package([&](const std::string& temporary) {
    write_model_package(temporary, loaded.model, int8, loaded.package->tokenizer, provenance, write_options);
  });
  return {stored.path, stored.sha256, stored.bytes, std::move(description), stored.created};
}

// A recipe applied: the options quantize_model ran with (a target_kl search's layers added), its
// layers, and the search's description.
struct Quantized {
  QuantizeOptions options;
  QuantizedLinears int8;
  std::string mixed;
};

// The share of each point's values a round's trim_agents takes off the top: what k participants
// could have contributed at most (k x sequences x seq_len tokens) over the tokens the fleet sent.
double trim_share(const RoundSettings& settings, const CalibrationStats& stats) {
  if (settings.trim_agents == 0) return 0;
  const double most = static_cast<double>(settings.trim_agents) * settings.sequences_per_agent * settings.seq_len;
  const double share = stats.tokens == 0 ? 1 : most / static_cast<double>(stats.tokens);
  if (share >= 0.5) {
    fail(
        "trim_agents = {}: {} participants could have sent up to {:.0f} of the round's {} tokens, so the scales would ignore "
        "{:.0f}% of every point's values; it takes more participants (or a smaller trim_agents)",
        settings.trim_agents, settings.trim_agents, most, stats.tokens, 100 * std::min(1.0, share));
  }
  return share;
}

// With `scale_groups` (the relay groups' statistics, group_scales "median"), each activation scale is
// the median of the groups'.
Quantized quantize_with(const LoadedModel& loaded, const CalibrationStats& stats, const RoundSettings& settings,
                        const ReferenceWindow& reference, double trim = 0, std::span<const CalibrationStats> scale_groups = {}) {
  Quantized out;
  QuantizeOptions& options = out.options;
  options.method = ScaleMethodSpec::parse(settings.method);
  options.trim_share = trim;
  for (const CalibrationStats& group : scale_groups) options.scale_groups.push_back(&group);
  options.per_channel = settings.per_channel;
  options.asymmetric = settings.asymmetric;
  options.keep_fp32 = {settings.keep_fp32.begin(), settings.keep_fp32.end()};
  options.fine_grained = {settings.fine_grained.begin(), settings.fine_grained.end()};
  if (stats.model_sha256 != model_fingerprint(loaded.model))
    fail("the statistics were recorded on another model than {}", loaded.path);
  options.weight_bits = settings.weight_bits;
  options.four_bit_grid = settings.four_bit_grid();
  if (options.weight_bits != 8 && stats.has_importance()) options.importance = linear_importance(stats, loaded.model.config);
  if (!settings.target_kl.empty()) {
    if (reference.runtime == nullptr) fail("target_kl {} needs the coordinator's reference_text", settings.target_kl);
    const LayerFallback fallback = parse_fallback(settings.fallback);
    const MixedPrecisionChoice choice = choose_mixed_precision(loaded.model, stats, options, reference.tokens, *reference.runtime,
                                                               KlTarget::parse(settings.target_kl), fallback, reference.baseline);
    out.mixed =
        fmt::format(", target KL {:.3g}{} on the reference text: {} layer(s) {}", choice.target_kl,
                    settings.target_kl.rfind("dynamic", 0) == 0 ? " (" + settings.target_kl + ": the dynamic baseline's)" : "",
                    choice.mixed.layers.size(), fallback_name(fallback)) +
        (choice.mixed.fine_grained_layers.empty()
             ? ""
             : fmt::format(" ({} of them then fine-grained)", choice.mixed.fine_grained_layers.size()));
  }
  out.int8 = quantize_model(loaded.model, stats, options);
  return out;
}

BuiltPackage store_quantized(const LoadedModel& loaded, const Quantized& quantized, const CalibrationStats& stats,
                             const SigningKey& key, const std::string& artifacts_dir, const std::string& label) {
  const QuantizeOptions& options = quantized.options;
  const PackageProvenance provenance = quantization_provenance(options, stats);
  return store_package(
      loaded, quantized.int8, provenance, key, artifacts_dir,
      fmt::format(
          "{}{}{}{}, calibrated on {} ({} sequences, {} tokens){}{}",
          options.weight_bits != 8
              ? provenance.method
              : fmt::format("INT8 {} {}", provenance.method, options.per_channel ? "per-channel" : "per-tensor"),
          options.keep_fp32.empty() ? "" : ", FP32: " + fmt::format("{}", fmt::join(options.keep_fp32, " ")),
          options.fine_grained.empty() ? "" : ", fine-grained: " + fmt::format("{}", fmt::join(options.fine_grained, " ")),
          quantized.mixed, label == "public" ? "public text" : "the fleet", stats.sequences, stats.tokens,
          options.scale_groups.empty() ? "" : fmt::format(", scales the median of {} relay groups'", options.scale_groups.size()),
          label.rfind("group:", 0) == 0 ? " for " + label : ""));
}

// The coordinator's check of a package before it is stored (plausibility_check.h); throws with the
// figures when it fails. The check text is made on first use.
class PublishGate {
 public:
  PublishGate(const LoadedModel& loaded, const QuantizationJobInput& input) : loaded_(loaded), input_(input) {}

  std::optional<PlausibilityCheck> check(const std::string& label, const Quantized& quantized) {
    if (input_.settings.max_kl_ratio == 0) return std::nullopt;
    if (!runtime_) {
      runtime_ = std::make_unique<XnnRuntime>(input_.threads);
      text_ = make_check_text(loaded_.model, *load_tokenizer(loaded_, std::nullopt), input_.reference_text,
                              input_.settings.seq_len, *runtime_);
    }
    PlausibilityCheck check = check_plausible(label, loaded_.model, quantized.int8, quantized.options, input_.stats, text_,
                                              *runtime_, input_.settings.max_kl_ratio);
    if (!check.passed()) fail("{}", check.failure());
    return check;
  }

 private:
  const LoadedModel& loaded_;
  const QuantizationJobInput& input_;
  std::unique_ptr<XnnRuntime> runtime_;
  CheckText text_;
};

// The round's exports: the fleet package's INT8 layers (onnx-qdq, tensorrt-cache), the FP32 model
// (gguf as Q8_0, onnx), the fleet's statistics (imatrix).
std::vector<BuiltExport> write_exports(const LoadedModel& loaded, const QuantizedLinears& int8, const QuantizationJobInput& input) {
  std::vector<BuiltExport> out;
  for (const std::string& format : input.settings.exports) {
    BuiltExport built;
    built.format = format;
    RuntimeExportInput what;
    what.model = &loaded.model;
    what.int8 = &int8;
    what.tokenizer = &loaded.package->tokenizer;
    what.stats = &input.stats;
    what.gguf_type = GgmlType::kQ8_0;
    what.name = fmt::format("fedcal round {}", input.round_id);
    try {
      const StoredArtifact stored = ArtifactStore(input.artifacts_dir).add_file(runtime_export_extension(format), [&](const std::string& temporary) {
        built.description = write_runtime_export(format, temporary, what).text;
      });
      built.path = stored.path;
      built.sha256 = stored.sha256;
      built.bytes = stored.bytes;
      built.created = stored.created;
    } catch (const std::exception& error) {  // an export that cannot be made does not fail the round
      built.error = error.what();
    }
    out.push_back(std::move(built));
  }
  return out;
}

// Folds SmoothQuant from the fleet's importance sums into the round's FP32 model: alpha per site by the
// static INT8 error on the reference text, with the round's weight granularity; for a 4-bit round,
// AWQ's input-channel scaling, by the 4-bit error on the round's grid (models/quant/smoothing.h).
BuiltSmoothing write_smoothed(LoadedModel& loaded, const QuantizationJobInput& input, const SigningKey& key,
                              const ReferenceWindow& reference) {
  if (reference.runtime == nullptr) fail("smoothing needs the coordinator's reference_text (alpha is chosen by the error on it)");
  if (input.stats.model_sha256 != model_fingerprint(loaded.model))
    fail("the statistics were recorded on another model than {}", loaded.path);
  SmoothingOptions options;
  options.per_channel_weights = input.settings.per_channel;
  options.weight_bits = input.settings.weight_bits;
  options.grid = input.settings.four_bit_grid();
  const std::vector<SiteSmoothing> sites = smooth_model(loaded.model, input.stats, reference.tokens, *reference.runtime, options);
  BuiltSmoothing built;
  built.sites = smoothing_sites_json(sites);
  for (const SiteSmoothing& site : sites) built.smoothed_sites += site.alpha.has_value();
  PackageProvenance provenance;
  provenance.source_model_sha256 = model_fingerprint(loaded.model);
  built.package = store_package(
      loaded, {}, provenance, key, input.artifacts_dir,
      fmt::format("FP32 {}, {} at {} of {} sites from round {}'s importance sums ({} sequences, {} tokens)",
                  loaded.model.config.describe(), options.weight_bits == 4 ? "AWQ scaling for 4-bit weights" : "SmoothQuant",
                  built.smoothed_sites, sites.size(), input.round_id, input.stats.sequences, input.stats.tokens));
  return built;
}

}  // namespace

std::vector<std::string> QuantizationJobResult::created_files() const {
  std::vector<std::string> files;
  const auto add = [&files](const BuiltPackage& built) {
    if (built.created && !built.path.empty()) files.push_back(built.path);
  };
  if (smoothed) add(smoothed->package);
  add(fleet);
  if (baseline) add(*baseline);
  if (static_class) add(*static_class);
  for (const auto& [label, built] : groups) add(built);
  for (const BuiltExport& built : exports) {
    if (built.created && !built.path.empty()) files.push_back(built.path);
  }
  return files;
}

QuantizationJobResult run_quantization_job(const QuantizationJobInput& input) {
  if (input.stall_ms > 0) std::this_thread::sleep_for(std::chrono::milliseconds(input.stall_ms));
  const SigningKey key = SigningKey::read_private_key(input.signing_key_path);
  LoadedModel loaded = load_model(input.fp32_package, &key);
  if (!loaded.package) fail("{}: the round's model is not a package", input.fp32_package);
  QuantizationJobResult result;
  std::unique_ptr<XnnRuntime> reference_runtime;
  ReferenceWindow reference;
  if (!input.reference_text.empty() && (input.settings.smooth || !input.settings.target_kl.empty())) {
    reference_runtime = std::make_unique<XnnRuntime>(input.threads);
    reference.runtime = reference_runtime.get();
    reference.tokens = load_tokenizer(loaded, std::nullopt)->encode(read_utf8_text_file(input.reference_text), true);
  }
  std::optional<LoadedModel> unsmoothed;
  if (!input.unsmoothed_package.empty() && input.settings.target_kl.rfind("dynamic", 0) == 0) {
    unsmoothed = load_model(input.unsmoothed_package, &key);
    reference.baseline = &unsmoothed->model;
  }
  if (input.settings.smooth) {
    result.smoothed = with_context([] { return std::string("smoothing with the fleet's importance sums"); },
                                   [&] { return write_smoothed(loaded, input, key, reference); });
    return result;
  }
  // Every package is checked before any is stored: a round that fails its check writes none.
  PublishGate gate(loaded, input);
  const double trim = trim_share(input.settings, input.stats);  // the fleet's statistics only, not the public text's
  std::span<const CalibrationStats> scale_groups;               // the fleet's packages' scales: group medians, or the aggregate's
  if (input.settings.median_group_scales()) {
    if (input.group_stats.size() < kMedianScaleMinGroups)
      fail("group_scales 'median' needs the sums of {} or more relay groups; this round has {}", kMedianScaleMinGroups,
           input.group_stats.size());
    scale_groups = input.group_stats;
  }
  const Quantized fleet =
      with_context([] { return std::string("quantizing with the fleet's statistics"); },
                   [&] { return quantize_with(loaded, input.stats, input.settings, reference, trim, scale_groups); });
  if (auto check = gate.check("fleet", fleet)) result.checks.push_back(std::move(*check));
  std::map<std::string, Quantized> groups;
  for (const auto& [group, variant] : input.settings.group_variants) {
    const std::string label = "group:" + group;  // (clang 14 cannot capture a structured binding)
    RoundSettings settings = input.settings;
    settings.per_channel = variant.per_channel;
    settings.keep_fp32 = variant.keep_fp32;
    groups[group] = with_context([&] { return "quantizing for " + label; },
                                 [&] { return quantize_with(loaded, input.stats, settings, reference, trim, scale_groups); });
    if (auto check = gate.check(label, groups[group])) result.checks.push_back(std::move(*check));
  }
  // Devices without an INT8 dot product run the fine-grained kernels slowly: their package keeps
  // those layers in FP32 (the static runtimes' recipe: layers the target moves go to FP32).
  std::optional<Quantized> static_class;
  if (input.static_class && (!fleet.options.fine_grained.empty() || fleet.options.weight_bits != 8)) {
    RoundSettings settings = input.settings;
    settings.runtime = "xnnpack";
    settings.weight_bits = 8;
    settings.keep_fp32.insert(settings.keep_fp32.end(), settings.fine_grained.begin(), settings.fine_grained.end());
    settings.fine_grained.clear();
    settings.fallback = "fp32";
    static_class = with_context([] { return std::string("quantizing for devices without an INT8 dot product"); },
                                [&] { return quantize_with(loaded, input.stats, settings, reference, trim, scale_groups); });
    if (auto check = gate.check(kStaticClassLabel, *static_class)) result.checks.push_back(std::move(*check));
  }
  result.fleet = store_quantized(loaded, fleet, input.stats, key, input.artifacts_dir, "fleet");
  result.exports = write_exports(loaded, fleet.int8, input);
  for (const auto& [group, quantized] : groups)
    result.groups[group] = store_quantized(loaded, quantized, input.stats, key, input.artifacts_dir, "group:" + group);
  if (static_class)
    result.static_class = store_quantized(loaded, *static_class, input.stats, key, input.artifacts_dir, kStaticClassLabel);
  if (!input.reference_text.empty()) {
    result.baseline = with_context([&] { return "calibrating on the public reference text " + input.reference_text; },
                                   [&] {
                                     const std::string text = read_utf8_text_file(input.reference_text);
                                     auto tokenizer = load_tokenizer(loaded, std::nullopt);
                                     XnnRuntime runtime(input.threads);
                                     Transformer transformer(loaded.model, runtime);
                                     CalibrationOptions options;
                                     options.sequences = static_cast<int>(std::max<uint64_t>(1, input.stats.sequences));
                                     options.seq_len = input.settings.seq_len;
                                     options.layout = input.stats.layout;
                                     // The same sums as the fleet's: a 4-bit baseline rounds by the public
                                     // text's importance as the fleet's package does by the fleet's.
                                     options.importance = input.stats.has_importance();
                                     const CalibrationStats stats =
                                         calibrate(transformer, *tokenizer, text, input.stats.model_sha256, options);
                                     return store_quantized(loaded, quantize_with(loaded, stats, input.settings, reference),
                                                            stats, key, input.artifacts_dir, "public");
                                   });
  }
  return result;
}

}  // namespace fedcal::coordinator
