#include "coordinator/quantization_job.h"

#include <fmt/ranges.h>
#include "common/error.h"
#include "common/file_util.h"

#include "common/signing.h"
#include "coordinator/artifact_store.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"

namespace fedcal::coordinator {
namespace {

BuiltPackage write_package(const LoadedModel& loaded, const CalibrationStats& stats, const RoundSettings& settings,
                           const SigningKey& key, const std::string& artifacts_dir, const std::string& label) {
  QuantizeOptions options;
  options.method = ScaleMethodSpec::parse(settings.method);
  options.per_channel = settings.per_channel;
  options.asymmetric = settings.asymmetric;
  options.keep_fp32 = {settings.keep_fp32.begin(), settings.keep_fp32.end()};
  if (stats.model_sha256 != model_fingerprint(loaded.model))
    fail("the statistics were recorded on another model than {}", loaded.path);
  const QuantizedLinears int8 = quantize_model(loaded.model, stats, options);
  const PackageProvenance provenance = quantization_provenance(options, stats);

  PackageWriteOptions write_options;
  write_options.signing_key = &key;
  const StoredArtifact stored = ArtifactStore(artifacts_dir).add_package([&](const std::string& temporary) {
    write_model_package(temporary, loaded.model, int8, loaded.package->tokenizer, provenance, write_options);
  });
  BuiltPackage built;
  built.sha256 = stored.sha256;
  built.path = stored.path;
  built.bytes = stored.bytes;
  built.description =
      fmt::format("INT8 {} {}{}, calibrated on {} ({} sequences, {} tokens){}", provenance.method,
                  options.per_channel ? "per-channel" : "per-tensor",
                  settings.keep_fp32.empty() ? "" : ", FP32: " + fmt::format("{}", fmt::join(settings.keep_fp32, " ")),
                  label == "public" ? "public text" : "the fleet", stats.sequences, stats.tokens,
                  label.rfind("group:", 0) == 0 ? " for " + label : "");
  return built;
}

}  // namespace

QuantizationJobResult run_quantization_job(const QuantizationJobInput& input) {
  const SigningKey key = SigningKey::read_private_key(input.signing_key_path);
  LoadedModel loaded = load_model(input.fp32_package, &key);
  if (!loaded.package) fail("{}: the round's model is not a package", input.fp32_package);
  QuantizationJobResult result;
  result.fleet =
      with_context([] { return std::string("quantizing with the fleet's statistics"); },
                   [&] { return write_package(loaded, input.stats, input.settings, key, input.artifacts_dir, "fleet"); });
  for (const auto& [group, variant] : input.settings.group_variants) {
    const std::string label = group;  // (clang 14 cannot capture a structured binding)
    RoundSettings settings = input.settings;
    settings.per_channel = variant.per_channel;
    settings.keep_fp32 = variant.keep_fp32;
    result.groups[label] =
        with_context([&] { return "quantizing for group " + label; },
                     [&] { return write_package(loaded, input.stats, settings, key, input.artifacts_dir, "group:" + label); });
  }
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
                                     const CalibrationStats stats =
                                         calibrate(transformer, *tokenizer, text, input.stats.model_sha256, options);
                                     return write_package(loaded, stats, input.settings, key, input.artifacts_dir, "public");
                                   });
  }
  return result;
}

}  // namespace fedcal::coordinator
