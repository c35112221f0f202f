#include "coordinator/model_export.h"

#include <filesystem>

#include "common/error.h"
#include "common/file_util.h"
#include "common/sha256.h"
#include "models/format/model_loader.h"
#include "models/format/runtime_export.h"

namespace fedcal::coordinator {

RuntimeExportSummary export_stored_model(const ModelExportSource& source, const std::string& format, const std::string& output,
                                         const SigningKey& signing_key) {
  if (source.made && source.made->error.empty()) {
    // What the round wrote, byte for byte (checked against its recorded digest on the way).
    if (sha256_file_hex(source.made->path) != source.made->sha256)
      fail("{}: the stored {} export does not match its recorded SHA-256", source.made->path, format);
    std::filesystem::copy_file(source.made->path, output, std::filesystem::copy_options::overwrite_existing);
    return {static_cast<uint64_t>(source.made->bytes), fmt::format("the {} file round {} made", format, source.made->round_id.value_or(0))};
  }
  const LoadedModel loaded = load_model(source.model.path, &signing_key);
  const bool needs_fp32 = format == "gguf" || format == "onnx";
  std::optional<LoadedModel> fp32;
  if (needs_fp32 && !loaded.int8.empty()) {
    if (!source.fp32_source) fail("model {} is an INT8 package without a round's FP32 model; {} needs FP32 weights", source.model.id, format);
    fp32 = load_model(source.fp32_source->path, &signing_key);
  }
  RuntimeExportInput input;
  input.model = fp32 ? &fp32->model : &loaded.model;
  input.int8 = &loaded.int8;
  input.tokenizer = loaded.package ? &loaded.package->tokenizer : nullptr;
  input.name = fmt::format("fedcal model {}", source.model.id);
  std::optional<CalibrationStats> stats;
  if (runtime_export_needs(format).importance) {
    if (!source.round_stats && source.model.round_id)
      fail(
          "model {}: the statistics of round {} were removed (round_stats_keep keeps the newest rounds' only); an importance "
          "matrix needs them",
          source.model.id, *source.model.round_id);
    if (!source.round_stats) fail("model {} was not made by a round: an importance matrix needs a round's statistics", source.model.id);
    stats = read_stats(*source.round_stats);
    if (!stats->has_importance())
      fail("round {} did not record importance sums: start a round with --export imatrix (or imatrix-gguf)", source.model.round_id.value_or(0));
    input.stats = &*stats;
  }
  return write_runtime_export(format, output, input);
}

}  // namespace fedcal::coordinator
