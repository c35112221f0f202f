// The runtime a package is made for, and the quantization recipe measured best for it: what `round
// start`, `fedcal-model quantize` and deploy/local-fleet.sh use when no recipe option is given
// (docs/QUANTIZATION.md, "Defaults by runtime", has the measurements behind each choice).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace fedcal {

// fedcal's engine runs every package type, the fine-grained mode included; the others take static
// INT8 scales only (QDQ graphs in ONNX Runtime or OpenVINO, TensorRT's calibration cache, XNNPACK's
// static operators on boards whose CPU has no INT8 dot product).
enum class TargetRuntime { kEngine, kOnnx, kOpenvino, kTensorrt, kXnnpack };

TargetRuntime parse_target_runtime(std::string_view name);  // throws Error listing the names
std::string_view target_runtime_name(TargetRuntime runtime);
const std::vector<std::string>& target_runtime_names();
bool runs_fine_grained(TargetRuntime runtime);  // the engine only

// A recipe's fields; each is what the option of the same name sets.
struct Recipe {
  std::string method;  // scale method of the static points
  bool per_channel = false;
  bool smooth = false;    // outlier migration first (needs importance sums, text and a second calibration)
  std::string target_kl;  // "" none; else KlTarget syntax
  std::string fallback;   // where target_kl moves layers: "fp32" or "fine-grained"
  std::string summary;    // one line: the choices and why
};

// The recipe measured best for `runtime`.
Recipe recommended_recipe(TargetRuntime runtime);
// The defaults before recipes (static per-tensor percentile:99.99, no smoothing, no target): one flag
// away (`--recipe plain`).
Recipe plain_recipe();
// "recommended" or "plain"; throws Error naming the choices.
Recipe named_recipe(std::string_view name, TargetRuntime runtime);

}  // namespace fedcal
