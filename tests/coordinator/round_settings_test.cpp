#include "coordinator/round_settings.h"

#include <doctest/doctest.h>

#include "common/error.h"

namespace fedcal::coordinator {
namespace {

TEST_CASE("Round settings: every field is range-checked, unknown ones refused") {
  CHECK_NOTHROW(RoundSettings::from_json({{"model_id", 1}, {"method", "mse"}}));
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"min_agents", 1}}), doctest::Contains("min_agents"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"method", "median"}}), doctest::Contains("median"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"sequence", 3}}), doctest::Contains("unknown round setting 'sequence'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"dp_epsilon", -1.0}}), doctest::Contains("dp_epsilon"), Error);
  CHECK_THROWS_AS(RoundSettings::from_json({{"seq_len", "long"}}), Error);
  const RoundSettings settings =
      RoundSettings::from_json({{"per_channel", true}, {"keep_fp32", {"classifier"}}, {"fine_grained", {"layers.0.w2", "layers.1"}}});
  CHECK(settings.fine_grained == std::vector<std::string>{"layers.0.w2", "layers.1"});
  CHECK(RoundSettings::from_json(settings.to_json()).to_json() == settings.to_json());
  // Exports of static scales cannot carry fine-grained layers.
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"fine_grained", {"layers.0.w2"}}, {"exports", {"onnx-qdq"}}}),
                       doctest::Contains("onnx-qdq holds static scales"), Error);
  CHECK_NOTHROW(RoundSettings::from_json({{"fine_grained", {"layers.0.w2"}}, {"exports", {"gguf", "imatrix"}}}));
  // The coordinator's check before publishing is on by default; 0 turns it off; between 0 and 1 it
  // would refuse honest packages.
  CHECK(RoundSettings::from_json(nlohmann::json::object()).max_kl_ratio == 4);
  CHECK(RoundSettings::from_json({{"max_kl_ratio", 0}}).max_kl_ratio == 0);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"max_kl_ratio", 0.5}}), doctest::Contains("max_kl_ratio = 0.5"), Error);
  CHECK(RoundSettings::from_json({{"max_exponent", 16}}).max_exponent == 16);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"max_exponent", 41}}), doctest::Contains("max_exponent = 41"), Error);
  CHECK(RoundSettings::from_json({{"max_kl_ratio", 8.0}, {"max_exponent", 20}}).to_json()["max_exponent"] == 20);
  CHECK(RoundSettings::from_json({{"trim_agents", 2}}).to_json()["trim_agents"] == 2);
  CHECK(RoundSettings::from_json(nlohmann::json::object()).trim_agents == 0);  // off unless asked
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"trim_agents", -1}}), doctest::Contains("trim_agents = -1"), Error);
  // Scales from the median of relay groups: only with relay groups, and instead of a trim.
  CHECK(RoundSettings::from_json(nlohmann::json::object()).group_scales == "sum");
  CHECK(RoundSettings::from_json({{"relay_group_size", 10}, {"group_scales", "median"}}).group_scales == "median");
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"group_scales", "median"}}), doctest::Contains("it needs relay_group_size"),
                       Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"relay_group_size", 10}, {"group_scales", "mean"}}),
                       doctest::Contains("group_scales = 'mean': must be 'sum' or 'median'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"relay_group_size", 10}, {"group_scales", "median"}, {"trim_agents", 1}}),
                       doctest::Contains("with trim_agents = 1"), Error);
}

TEST_CASE("Round settings: the recommended recipe fills what the settings do not name, for the runtime they are for") {
  // Without "recipe": the plain defaults (what scripts sending partial settings always got).
  const RoundSettings plain = RoundSettings::from_json({{"model_id", 1}});
  CHECK(plain.method == "percentile:99.99");
  CHECK_FALSE(plain.per_channel);
  CHECK_FALSE(plain.smooth);
  CHECK(plain.target_kl.empty());
  CHECK(plain.recipe_notes.empty());
  // The engine's recipe: every recipe field, with a note saying what it chose.
  const RoundSettings engine = RoundSettings::from_json({{"recipe", "recommended"}});
  CHECK(engine.runtime == "engine");
  CHECK(engine.method == "mse");
  CHECK(engine.per_channel);
  CHECK(engine.smooth);
  CHECK(engine.target_kl == "dynamic*0.8");
  CHECK(engine.fallback == "fine-grained");
  REQUIRE(engine.recipe_notes.size() == 1);
  CHECK(engine.recipe_notes[0].find("method = \"mse\", per_channel = true, smooth = true") != std::string::npos);
  // Stored and read back (a restart, a follow-up round): the same settings, no second note.
  CHECK(RoundSettings::from_json(engine.to_json()).to_json() == engine.to_json());
  // What is given stays; the rest comes from the recipe.
  const RoundSettings given =
      RoundSettings::from_json({{"recipe", "recommended"}, {"method", "minmax"}, {"smooth", false}, {"target_kl", ""}});
  CHECK(given.method == "minmax");
  CHECK_FALSE(given.smooth);
  CHECK(given.target_kl.empty());
  CHECK(given.per_channel);
  // Without the coordinator's reference text: no smoothing, no target, and the note says why.
  const RoundSettings no_text = RoundSettings::from_json({{"recipe", "recommended"}}, false);
  CHECK_FALSE(no_text.smooth);
  CHECK(no_text.target_kl.empty());
  REQUIRE(no_text.recipe_notes.size() == 2);
  CHECK(no_text.recipe_notes[1].find("no reference_text") != std::string::npos);
  // A static-scale runtime: the sensitive layers go to FP32; fine-grained layers are refused.
  const RoundSettings onnx = RoundSettings::from_json({{"recipe", "recommended"}, {"runtime", "onnx"}});
  CHECK(onnx.fallback == "fp32");
  CHECK(onnx.target_kl == "dynamic");
  CHECK(onnx.smooth);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"runtime", "xnnpack"}, {"fine_grained", {"layers.0"}}}),
                       doctest::Contains("runtime xnnpack runs static INT8 scales only"), Error);
  CHECK_THROWS_WITH_AS(
      RoundSettings::from_json({{"recipe", "recommended"}, {"runtime", "tensorrt"}, {"fallback", "fine-grained"}}),
      doctest::Contains("runtime tensorrt"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"runtime", "tflite"}}),
                       doctest::Contains("runtime 'tflite': one of engine, onnx"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"recipe", "best"}}), doctest::Contains("recipe 'best'"), Error);
  // Static exports from the engine's recipe: fallback FP32, said; DP: no smoothing (importance sums
  // carry no noise), said.
  const RoundSettings exports = RoundSettings::from_json({{"recipe", "recommended"}, {"exports", {"onnx-qdq"}}});
  CHECK(exports.fallback == "fp32");
  CHECK(exports.recipe_notes.back().find("static scales only") != std::string::npos);
  const RoundSettings dp = RoundSettings::from_json({{"recipe", "recommended"}, {"dp_epsilon", 4.0}});
  CHECK_FALSE(dp.smooth);
  CHECK(dp.recipe_notes.back().find("differential-privacy") != std::string::npos);
}

TEST_CASE("Round settings: exports are known formats, once each, and only where the round can make them") {
  const RoundSettings settings = RoundSettings::from_json({{"exports", {"gguf", "imatrix", "tensorrt-cache"}}});
  CHECK(settings.importance());
  CHECK(RoundSettings::from_json(settings.to_json()).exports == settings.exports);
  CHECK_FALSE(RoundSettings::from_json({{"exports", {"onnx"}}}).importance());
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"exports", {"safetensors"}}}), doctest::Contains("unknown format 'safetensors'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"exports", {"gguf", "gguf"}}}), doctest::Contains("'gguf' is named twice"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"recipe", "recommended"}, {"exports", {"safetensors"}}}),
                       doctest::Contains("unknown format 'safetensors'"), Error);  // before the recipe reads what exports need
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"exports", {"tensorrt-cache"}}, {"asymmetric", true}}),
                       doctest::Contains("tensorrt-cache holds symmetric ranges"), Error);
  CHECK_NOTHROW(RoundSettings::from_json({{"exports", {"onnx-qdq"}}, {"asymmetric", true}}));  // QDQ carries zero points
  // Importance sums are not noised for DP.
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"exports", {"imatrix"}}, {"dp_epsilon", 1.0}}), doctest::Contains("imatrix with dp_epsilon"),
                       Error);
  // They travel in 21-bit limbs, so 32-bit lanes hold them (calibration_stats.h).
  CHECK(RoundSettings::from_json({{"exports", {"imatrix"}}, {"lane_bits", 32}}).lane_bits == 32);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"exports", {"tensorrt-cache"}}, {"asymmetric", true}}), doctest::Contains("symmetric"),
                       Error);
}

TEST_CASE(
    "Round settings: 4-bit weights run on the engine only, ask the agents for importance sums (not with DP), and skip the INT8 "
    "recipe") {
  const RoundSettings four = RoundSettings::from_json({{"weight_bits", 4}});
  CHECK(four.importance());
  CHECK(four.int4_grid == "non-uniform");
  CHECK(RoundSettings::from_json(four.to_json()).to_json() == four.to_json());
  CHECK_FALSE(RoundSettings::from_json(nlohmann::json::object()).importance());
  // With DP the importance sums carry no noise: not recorded, the rounding is plain.
  CHECK_FALSE(RoundSettings::from_json({{"weight_bits", 4}, {"dp_epsilon", 1.0}}).importance());
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"weight_bits", 6}}), doctest::Contains("weight_bits = 6: must be 8, 5 or 4"),
                       Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"weight_bits", 4}, {"int4_grid", "nf4"}}),
                       doctest::Contains("int4_grid = 'nf4'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"weight_bits", 4}, {"runtime", "onnx"}}),
                       doctest::Contains("runtime onnx runs static INT8 scales only: weight_bits = 4"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"weight_bits", 4}, {"exports", {"tensorrt-cache"}}}),
                       doctest::Contains("tensorrt-cache holds static INT8 scales; weight_bits = 4"), Error);
  // The recommended recipe's target and smoothing are INT8's: not applied to a 4-bit round.
  const RoundSettings recommended = RoundSettings::from_json({{"weight_bits", 4}, {"recipe", "recommended"}});
  CHECK(recommended.target_kl.empty());
  CHECK_FALSE(recommended.smooth);
  REQUIRE(recommended.recipe_notes.size() == 1);
  CHECK(recommended.recipe_notes[0].find("weight_bits = 4") != std::string::npos);
  // 5 bits: the same rules, no smoothing (AWQ is chosen by the 4-bit error); the 5-bit fallback starts from 4 bits.
  const RoundSettings five = RoundSettings::from_json({{"weight_bits", 5}});
  CHECK(five.importance());
  CHECK(RoundSettings::from_json(five.to_json()).to_json() == five.to_json());
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"weight_bits", 5}, {"runtime", "xnnpack"}}),
                       doctest::Contains("runtime xnnpack runs static INT8 scales only: weight_bits = 5"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"weight_bits", 5}, {"smooth", true}}),
                       doctest::Contains("weight_bits = 5 with smooth"), Error);
  CHECK(RoundSettings::from_json({{"weight_bits", 4}, {"target_kl", "0.003"}, {"fallback", "5-bit"}}).fallback == "5-bit");
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"target_kl", "0.003"}, {"fallback", "5-bit"}}),
                       doctest::Contains("fallback = 5-bit moves layers from 4 bits"), Error);
}

TEST_CASE("Round settings: smoothing and a target KL are checked up front, naming the setting") {
  const RoundSettings settings =
      RoundSettings::from_json({{"smooth", true}, {"target_kl", "dynamic"}, {"fallback", "fine-grained"}});
  CHECK(settings.importance());  // a smoothing round's agents sum squared activations
  const RoundSettings again = RoundSettings::from_json(settings.to_json());
  CHECK(again.smooth);
  CHECK(again.target_kl == "dynamic");
  CHECK(again.fallback == "fine-grained");
  CHECK(RoundSettings::from_json({{"target_kl", "0.001"}}).target_kl == "0.001");
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"target_kl", "low"}}), doctest::Contains("target_kl: target KL 'low'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"fallback", "fp16"}}), doctest::Contains("fallback: fallback 'fp16'"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"smooth", true}, {"smoothing_round", 4}}), doctest::Contains("smoothed already"), Error);
  CHECK_THROWS_WITH_AS(RoundSettings::from_json({{"smooth", true}, {"dp_epsilon", 1.0}}), doctest::Contains("smooth with dp_epsilon"), Error);
  // Layers the search moves to the fine-grained mode have no static scales to export.
  CHECK_THROWS_WITH_AS(
      RoundSettings::from_json({{"target_kl", "dynamic"}, {"fallback", "fine-grained"}, {"exports", {"onnx-qdq"}}}),
      doctest::Contains("onnx-qdq holds static scales"), Error);
  CHECK(RoundSettings::from_json({{"target_kl", "dynamic"}, {"exports", {"onnx-qdq"}}}).fallback == "fp32");
}

}  // namespace
}  // namespace fedcal::coordinator
