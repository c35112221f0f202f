#include "coordinator/plausibility_check.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <sstream>

#include "common/error.h"
#include "common/file_util.h"
#include "models/engine/generation.h"
#include "models/engine/transformer.h"
#include "models/quant/activation_histogram.h"
#include "models/quant/calibration.h"

namespace fedcal::coordinator {
namespace {

constexpr size_t kReferenceCalibrationLines = 64;
constexpr size_t kScoredDocuments = 8;  // of the reference text; sampled documents

std::vector<int> cut(std::vector<int> tokens, int seq_len) {
  if (tokens.size() > static_cast<size_t>(seq_len)) tokens.resize(static_cast<size_t>(seq_len));
  return tokens;
}

}  // namespace

CheckText make_check_text(const Model& model, const Tokenizer& tokenizer, const std::string& reference_text_path, int seq_len,
                          const XnnRuntime& runtime) {
  seq_len = std::clamp(seq_len, 2, model.config.max_seq_len);
  CheckText text;
  if (!reference_text_path.empty()) {
    std::vector<std::string> lines;
    std::istringstream stream(read_utf8_text_file(reference_text_path));
    for (std::string line; std::getline(stream, line);) {
      if (!line.empty()) lines.push_back(line);
    }
    if (lines.empty()) fail("{}: the reference text has no non-empty line", reference_text_path);
    // The last lines are scored; the ones before them (or, in a text too short for both, the same)
    // calibrate the comparison recipe.
    const size_t scored = std::min(kScoredDocuments, (lines.size() + 1) / 2);
    for (size_t i = lines.size() - scored; i < lines.size(); ++i)
      text.evaluation.push_back(cut(tokenizer.encode(lines[i], true), seq_len));
    const size_t calibrating = std::min(kReferenceCalibrationLines, lines.size() - scored);
    for (size_t i = 0; i < calibrating; ++i) text.calibration.push_back(cut(tokenizer.encode(lines[i], true), seq_len));
    if (text.calibration.empty()) text.calibration = text.evaluation;
    text.source = fmt::format("the last {} lines of the reference text {}", scored, reference_text_path);
    return text;
  }
  Transformer fp32(model, runtime);
  text.evaluation = sample_documents(fp32, tokenizer, static_cast<int>(kScoredDocuments), seq_len);
  text.calibration = text.evaluation;
  text.source = fmt::format("{} documents the FP32 model sampled (no reference_text is configured)", kScoredDocuments);
  return text;
}

std::string PlausibilityCheck::failure() const {
  std::string overflowed;
  if (!overflow.empty()) {
    std::vector<std::string> points;
    for (const auto& [point, count] : overflow) points.push_back(fmt::format("{} ({})", point, count));
    overflowed = fmt::format("; values at or above the histogram's top 2^{} were counted there at {}", max_exponent,
                             fmt::join(points, ", "));
  }
  return fmt::format(
      "the {} package is implausible, not published: its KL from FP32 on {} ({} tokens) is {:.4g}, {:.1f}x its recipe "
      "calibrated on that text ({:.4g}) and {:.1f}x the calibration-free baseline ({:.4g}), above max_kl_ratio {} ({:.4g}): "
      "statistics far from this text's (a participant's wrong statistics, or a fleet whose text is unlike it){}",
      label, text, tokens, kl, kl / std::max(same_recipe_kl, 1e-12), same_recipe_kl, kl / std::max(dynamic_kl, 1e-12), dynamic_kl,
      max_ratio, bound, overflowed);
}

nlohmann::json PlausibilityCheck::to_json() const {
  return {{"label", label},
          {"text", text},
          {"tokens", tokens},
          {"mean_kl", kl},
          {"same_recipe_kl", same_recipe_kl},
          {"dynamic_kl", dynamic_kl},
          {"max_ratio", max_ratio},
          {"bound", bound},
          {"passed", passed()},
          {"overflow", overflow},
          {"max_exponent", max_exponent}};
}

PlausibilityCheck check_plausible(const std::string& label, const Model& model, const QuantizedLinears& int8,
                                  const QuantizeOptions& options, const CalibrationStats& stats, const CheckText& text,
                                  const XnnRuntime& runtime, double max_ratio) {
  PlausibilityCheck check;
  check.label = label;
  check.text = text.source;
  check.max_ratio = max_ratio;
  check.max_exponent = stats.layout.max_exponent;
  for (size_t i = 0; i < stats.points.size(); ++i) {
    const uint64_t overflow = summarize_histogram(stats.layout, stats.point(i)).overflow;
    if (overflow > 0) check.overflow[stats.points[i]] = overflow;
  }
  const WindowKl kl(model, text.evaluation, runtime);
  check.tokens = kl.tokens();
  {
    Transformer package(model, runtime, {}, &int8);
    check.kl = kl.of(package);
  }
  {
    Transformer fp32(model, runtime);
    CalibrationOptions calibration;
    calibration.seq_len = model.config.max_seq_len;  // the documents are cut already
    calibration.layout = stats.layout;
    const CalibrationStats local = calibrate_documents(fp32, text.calibration, stats.model_sha256, calibration);
    QuantizeOptions local_options = options;
    local_options.scale_groups.clear();  // the recipe on the check text's own statistics, not the fleet's groups'
    const QuantizedLinears same_recipe = quantize_model(model, local, local_options);
    Transformer candidate(model, runtime, {}, &same_recipe);
    check.same_recipe_kl = kl.of(candidate);
  }
  check.dynamic_kl = dynamic_baseline_kl(model, options, kl, runtime);
  check.bound = max_ratio * std::max(check.same_recipe_kl, check.dynamic_kl);
  return check;
}

}  // namespace fedcal::coordinator
