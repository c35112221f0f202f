#include "coordinator/round_settings.h"

#include <fmt/ranges.h>

#include <algorithm>

#include "common/error.h"
#include "models/format/runtime_export.h"
#include "models/quant/quantize.h"
#include "models/quant/recipe.h"
#include "models/quant/scales.h"

namespace fedcal::coordinator {

nlohmann::json RoundSettings::to_json() const {
  nlohmann::json variants = nlohmann::json::object();
  for (const auto& [label, variant] : group_variants)
    variants[label] = {{"per_channel", variant.per_channel}, {"keep_fp32", variant.keep_fp32}};
  return {{"group_variants", variants},
          {"model_id", model_id},
          {"min_agents", min_agents},
          {"max_agents", max_agents},
          {"sequences_per_agent", sequences_per_agent},
          {"seq_len", seq_len},
          {"runtime", runtime},
          {"recipe", recipe},
          {"recipe_notes", recipe_notes},
          {"method", method},
          {"per_channel", per_channel},
          {"asymmetric", asymmetric},
          {"keep_fp32", keep_fp32},
          {"fine_grained", fine_grained},
          {"smooth", smooth},
          {"smoothing_round", smoothing_round},
          {"target_kl", target_kl},
          {"fallback", fallback},
          {"weight_bits", weight_bits},
          {"int4_grid", int4_grid},
          {"mantissa_bits", mantissa_bits},
          {"max_exponent", max_exponent},
          {"trim_agents", trim_agents},
          {"max_kl_ratio", max_kl_ratio},
          {"dp_epsilon", dp_epsilon},
          {"dp_delta", dp_delta},
          {"neighbours", neighbours},
          {"threshold", threshold},
          {"lane_bits", lane_bits},
          {"relay_group_size", relay_group_size},
          {"group_scales", group_scales},
          {"exports", exports},
          {"device_classes", device_classes}};
}

namespace {

// The recipe's choice for each recipe field `json` does not name, with a note per choice.
void apply_recipe(const nlohmann::json& json, bool has_reference_text, RoundSettings& settings) {
  const TargetRuntime runtime =
      with_context([] { return std::string("runtime"); }, [&] { return parse_target_runtime(settings.runtime); });
  const Recipe recipe =
      with_context([] { return std::string("recipe"); }, [&] { return named_recipe(settings.recipe, runtime); });
  // Settings read back from a round's record were resolved when it started (they carry their notes).
  if (settings.recipe != "recommended" || json.contains("recipe_notes")) return;
  if (settings.weight_bits != 8) {
    // The recipe's target and smoothing are measured for INT8: they would move every layer back.
    settings.recipe_notes.push_back(
        fmt::format("weight_bits = {}: the recipe's KL target and smoothing (measured for INT8) are not applied; target_kl with "
                    "fallback fine-grained (or 5-bit) moves the layers that need it to INT8 groups (or 5 bits)",
                    settings.weight_bits));
    return;
  }
  std::vector<std::string> chosen;
  const auto choose = [&](const char* key, auto& field, const auto& value) {
    if (json.contains(key)) return;
    field = value;
    chosen.push_back(fmt::format("{} = {}", key, nlohmann::json(value).dump()));
  };
  choose("method", settings.method, recipe.method);
  choose("per_channel", settings.per_channel, recipe.per_channel);
  const bool static_exports = any_export_needs(settings.exports, &RuntimeExportNeeds::static_int8);
  const bool measures = has_reference_text && settings.smoothing_round == 0;
  if (measures) choose("smooth", settings.smooth, recipe.smooth && settings.dp_epsilon == 0);
  if (has_reference_text) choose("target_kl", settings.target_kl, recipe.target_kl);
  choose("fallback", settings.fallback, static_exports ? std::string("fp32") : recipe.fallback);
  settings.recipe_notes.push_back(
      fmt::format("recipe recommended for runtime {}: {}; chosen: {}", settings.runtime, recipe.summary,
                  chosen.empty() ? "nothing (every field given)" : fmt::format("{}", fmt::join(chosen, ", "))));
  if (!has_reference_text && (recipe.smooth || !recipe.target_kl.empty()) &&
      (!json.contains("smooth") || !json.contains("target_kl")))
    settings.recipe_notes.push_back(
        "without smoothing and without a KL target: both measure on public text, and the coordinator has no reference_text "
        "(set it in the coordinator's configuration: measured 0.75-0.89x the calibration-free baseline's KL with it, "
        "5.5-8x without)");
  if (recipe.smooth && !json.contains("smooth") && settings.dp_epsilon > 0)
    settings.recipe_notes.push_back("without smoothing: its importance sums carry no differential-privacy noise");
  if (static_exports && !json.contains("fallback") && recipe.fallback != "fp32")
    settings.recipe_notes.push_back("fallback fp32: the onnx-qdq and tensorrt-cache exports hold static scales only");
}

}  // namespace

RoundSettings RoundSettings::from_json(const nlohmann::json& json, bool has_reference_text) {
  RoundSettings settings;
  try {
    if (!json.is_object()) fail("round settings must be a JSON object");
    for (const auto& [key, value] : json.items()) {
      if (!settings.to_json().contains(key)) fail("unknown round setting '{}'", key);
    }
    settings.model_id = json.value("model_id", settings.model_id);
    settings.min_agents = json.value("min_agents", settings.min_agents);
    settings.max_agents = json.value("max_agents", settings.max_agents);
    settings.sequences_per_agent = json.value("sequences_per_agent", settings.sequences_per_agent);
    settings.seq_len = json.value("seq_len", settings.seq_len);
    settings.runtime = json.value("runtime", settings.runtime);
    settings.recipe = json.value("recipe", settings.recipe);
    settings.recipe_notes = json.value("recipe_notes", settings.recipe_notes);
    settings.method = json.value("method", settings.method);
    settings.per_channel = json.value("per_channel", settings.per_channel);
    settings.asymmetric = json.value("asymmetric", settings.asymmetric);
    settings.keep_fp32 = json.value("keep_fp32", settings.keep_fp32);
    settings.fine_grained = json.value("fine_grained", settings.fine_grained);
    settings.smooth = json.value("smooth", settings.smooth);
    settings.smoothing_round = json.value("smoothing_round", settings.smoothing_round);
    settings.target_kl = json.value("target_kl", settings.target_kl);
    settings.fallback = json.value("fallback", settings.fallback);
    settings.weight_bits = json.value("weight_bits", settings.weight_bits);
    settings.int4_grid = json.value("int4_grid", settings.int4_grid);
    settings.mantissa_bits = json.value("mantissa_bits", settings.mantissa_bits);
    settings.max_exponent = json.value("max_exponent", settings.max_exponent);
    settings.trim_agents = json.value("trim_agents", settings.trim_agents);
    settings.max_kl_ratio = json.value("max_kl_ratio", settings.max_kl_ratio);
    settings.dp_epsilon = json.value("dp_epsilon", settings.dp_epsilon);
    settings.dp_delta = json.value("dp_delta", settings.dp_delta);
    settings.neighbours = json.value("neighbours", settings.neighbours);
    settings.threshold = json.value("threshold", settings.threshold);
    settings.lane_bits = json.value("lane_bits", settings.lane_bits);
    settings.relay_group_size = json.value("relay_group_size", settings.relay_group_size);
    settings.group_scales = json.value("group_scales", settings.group_scales);
    settings.exports = json.value("exports", settings.exports);
    settings.device_classes = json.value("device_classes", settings.device_classes);
    const nlohmann::json variants = json.value("group_variants", nlohmann::json::object());
    if (!variants.is_object()) fail("group_variants must be an object of label -> settings");
    for (const auto& [label, variant] : variants.items()) {
      if (label.empty() || label.size() > 64) fail("group_variants: a label of {} characters", label.size());
      for (const auto& [key, value] : variant.items()) {
        if (key != "per_channel" && key != "keep_fp32") fail("group_variants.{}: unknown setting '{}'", label, key);
      }
      settings.group_variants[label] = {variant.value("per_channel", false),
                                        variant.value("keep_fp32", std::vector<std::string>{})};
    }
    // Known formats before the recipe reads what they need.
    for (size_t i = 0; i < settings.exports.size(); ++i) {
      const std::string& format = settings.exports[i];
      if (std::find(kRuntimeExportFormats.begin(), kRuntimeExportFormats.end(), format) == kRuntimeExportFormats.end())
        fail("exports: unknown format '{}' (known: {})", format, fmt::join(kRuntimeExportFormats, ", "));
      if (std::find(settings.exports.begin(), settings.exports.begin() + static_cast<std::ptrdiff_t>(i), format) !=
          settings.exports.begin() + static_cast<std::ptrdiff_t>(i))
        fail("exports: '{}' is named twice", format);
    }
    apply_recipe(json, has_reference_text, settings);
  } catch (const nlohmann::json::exception& error) {
    fail("round settings: {}", error.what());
  }
  if (settings.min_agents < 2 || settings.min_agents > 100000) fail("min_agents = {}: must be 2..100000", settings.min_agents);
  if (settings.max_agents != 0 && settings.max_agents < settings.min_agents)
    fail("max_agents = {} is below min_agents", settings.max_agents);
  if (settings.sequences_per_agent < 1 || settings.sequences_per_agent > 1000000)
    fail("sequences_per_agent = {}: must be 1..1000000", settings.sequences_per_agent);
  if (settings.seq_len < 2 || settings.seq_len > 65536) fail("seq_len = {}: must be 2..65536", settings.seq_len);
  if (settings.mantissa_bits < 0 || settings.mantissa_bits > 10)
    fail("mantissa_bits = {}: must be 0..10", settings.mantissa_bits);
  if (settings.max_exponent < 1 || settings.max_exponent > 40)
    fail("max_exponent = {}: must be 1..40 (the histogram's top is 2^max_exponent)", settings.max_exponent);
  if (settings.trim_agents < 0 || settings.trim_agents > 100000)
    fail("trim_agents = {}: must be 0 (off) to 100000", settings.trim_agents);
  if (!(settings.max_kl_ratio == 0 || (settings.max_kl_ratio >= 1 && settings.max_kl_ratio <= 1e6)))
    fail("max_kl_ratio = {}: must be 0 (no check) or in [1, 1e6]", settings.max_kl_ratio);
  if (settings.dp_epsilon < 0 || settings.dp_epsilon > 100)
    fail("dp_epsilon = {}: must be 0 (off) or in (0, 100]", settings.dp_epsilon);
  if (!(settings.dp_delta > 0 && settings.dp_delta < 1)) fail("dp_delta = {}: must be in (0, 1)", settings.dp_delta);
  if (settings.relay_group_size < 0 || settings.relay_group_size > 100000)
    fail("relay_group_size = {}: must be 0 (no relay groups) or 1..100000", settings.relay_group_size);
  if (settings.relay_group_size > 0 && settings.relay_group_size < settings.min_agents)
    fail("relay_group_size = {} is below min_agents = {}: a group's sum must be of min_agents agents or more",
         settings.relay_group_size, settings.min_agents);
  if (settings.group_scales != "sum" && settings.group_scales != "median")
    fail("group_scales = '{}': must be 'sum' or 'median'", settings.group_scales);
  if (settings.median_group_scales() && settings.relay_group_size == 0)
    fail("group_scales = 'median' takes the scales from relay groups: it needs relay_group_size");
  if (settings.median_group_scales() && settings.trim_agents != 0)
    fail("group_scales = 'median' with trim_agents = {}: the median already bounds what a few groups do; use one",
         settings.trim_agents);
  if (settings.neighbours < 0 || settings.neighbours > 254)
    fail("neighbours = {}: must be 0 (automatic) or 1..254", settings.neighbours);
  if (settings.group_variants.size() > 8) fail("group_variants: {} groups (at most 8)", settings.group_variants.size());
  if (settings.threshold < 0 || settings.threshold > 255)
    fail("threshold = {}: must be 0 (automatic) or 2..255", settings.threshold);
  if (settings.lane_bits != 0 && settings.lane_bits != 32 && settings.lane_bits != 64)
    fail("lane_bits = {}: must be 0 (automatic), 32 or 64", settings.lane_bits);
  ScaleMethodSpec::parse(settings.method);
  const char* importance_for = settings.smooth ? "smooth" : "exports: imatrix";
  if (settings.importance() && settings.dp_epsilon > 0)
    fail("{} with dp_epsilon = {}: the noise is calibrated for the histograms only, not the importance sums", importance_for,
         settings.dp_epsilon);
  if (settings.smooth && settings.smoothing_round != 0)
    fail("smooth with smoothing_round = {}: a follow-up round's model is smoothed already", settings.smoothing_round);
  if (settings.smoothing_round < 0) fail("smoothing_round = {}: must be a round id", settings.smoothing_round);
  if (!settings.target_kl.empty()) with_context([] { return std::string("target_kl"); }, [&] { KlTarget::parse(settings.target_kl); });
  const LayerFallback fallback = with_context([] { return std::string("fallback"); }, [&] { return parse_fallback(settings.fallback); });
  const bool fine_grained = !settings.fine_grained.empty() || (!settings.target_kl.empty() && fallback == LayerFallback::kFineGrained);
  if (fine_grained && !runs_fine_grained(parse_target_runtime(settings.runtime)))
    fail(
        "runtime {} runs static INT8 scales only: fine-grained layers (fine_grained, or target_kl with fallback fine-grained) "
        "need fedcal's engine",
        settings.runtime);
  if (settings.weight_bits != 8 && settings.weight_bits != 5 && settings.weight_bits != 4)
    fail("weight_bits = {}: must be 8, 5 or 4", settings.weight_bits);
  if (settings.weight_bits == 5 && settings.smooth)
    fail("weight_bits = 5 with smooth: AWQ's scaling is chosen by the 4-bit error (weight_bits = 4) and SmoothQuant's by INT8's");
  if (settings.fallback == "5-bit" && settings.weight_bits != 4)
    fail("fallback = 5-bit moves layers from 4 bits: it needs weight_bits = 4");
  if (settings.int4_grid != "non-uniform" && settings.int4_grid != "uniform")
    fail("int4_grid = '{}': must be non-uniform or uniform", settings.int4_grid);
  if (settings.weight_bits != 8) {
    if (!runs_fine_grained(parse_target_runtime(settings.runtime)))
      fail("runtime {} runs static INT8 scales only: weight_bits = {} needs fedcal's engine", settings.runtime,
           settings.weight_bits);
    for (const std::string& format : settings.exports) {
      if (runtime_export_needs(format).static_int8)
        fail("exports: {} holds static INT8 scales; weight_bits = {} has none (leave out one or the other)", format,
             settings.weight_bits);
    }
  }
  for (const std::string& format : settings.exports) {
    const RuntimeExportNeeds needs = runtime_export_needs(format);
    if (fine_grained && needs.static_int8)
      fail("exports: {} holds static scales; fine-grained layers (fine_grained, or target_kl with fallback fine-grained) have "
           "none (leave out one or the other)",
           format);
    if (needs.symmetric && settings.asymmetric)
      fail("exports: {} holds symmetric ranges; asymmetric activations have zero points", format);
  }
  return settings;
}

bool RoundSettings::importance() const {
  return smooth || (weight_bits != 8 && dp_epsilon == 0) || any_export_needs(exports, &RuntimeExportNeeds::importance);
}

}  // namespace fedcal::coordinator
