#include "models/quant/recipe.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <array>
#include <utility>

#include "common/error.h"

namespace fedcal {
namespace {

constexpr std::array<std::pair<TargetRuntime, std::string_view>, 5> kRuntimes = {{
    {TargetRuntime::kEngine, "engine"},
    {TargetRuntime::kOnnx, "onnx"},
    {TargetRuntime::kOpenvino, "openvino"},
    {TargetRuntime::kTensorrt, "tensorrt"},
    {TargetRuntime::kXnnpack, "xnnpack"},
}};

}  // namespace

const std::vector<std::string>& target_runtime_names() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out;
    for (const auto& [runtime, name] : kRuntimes) out.emplace_back(name);
    return out;
  }();
  return names;
}

TargetRuntime parse_target_runtime(std::string_view name) {
  for (const auto& [runtime, known] : kRuntimes) {
    if (known == name) return runtime;
  }
  fail("runtime '{}': one of {}", name, fmt::join(target_runtime_names(), ", "));
}

std::string_view target_runtime_name(TargetRuntime runtime) {
  for (const auto& [known, name] : kRuntimes) {
    if (known == runtime) return name;
  }
  return "?";
}

bool runs_fine_grained(TargetRuntime runtime) { return runtime == TargetRuntime::kEngine; }

Recipe recommended_recipe(TargetRuntime runtime) {
  if (runs_fine_grained(runtime)) {
    // docs/QUANTIZATION.md: on both project models the smoothed mse per-channel package with the
    // fewest sensitive layers fine-grained is 0.75-0.89x the dynamic baseline's KL (static alone:
    // 5.5-8x) at 26.5% of FP32's bytes, and most layers keep XNNPACK's static kernels.
    return {"mse",
            true,
            true,
            "dynamic*0.8",
            "fine-grained",
            "smoothing, mse per-channel, the fewest sensitive layers fine-grained until the KL is 0.8x the "
            "calibration-free baseline's (measured best for fedcal's engine)"};
  }
  // Static-scale runtimes cannot run the fine-grained mode: the sensitive layers stay FP32.
  return {"mse",
          true,
          true,
          "dynamic",
          "fp32",
          fmt::format("smoothing, mse per-channel, the fewest sensitive layers in FP32 until the KL reaches the "
                      "calibration-free baseline's ({} runs static INT8 scales only)",
                      target_runtime_name(runtime))};
}

Recipe plain_recipe() {
  return {"percentile:99.99", false, false, "", "fp32", "static per-tensor percentile:99.99, no smoothing, no target"};
}

Recipe named_recipe(std::string_view name, TargetRuntime runtime) {
  if (name == "recommended") return recommended_recipe(runtime);
  if (name == "plain") return plain_recipe();
  fail("recipe '{}': recommended (measured best for the runtime) or plain (static per-tensor percentile:99.99)", name);
}

}  // namespace fedcal
