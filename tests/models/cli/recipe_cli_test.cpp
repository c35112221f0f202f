// The recipes of `fedcal-model quantize` on the project model (models/quant/recipe.h): the default one
// measured on held-out text. Seconds in the g++ build: a slow test (not run under ASan).
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::run_command;

std::string fedcal_model() { return testing::built_binary("fedcal-model"); }

TEST_CASE(
    "fedcal-model quantize --stats S with no other option: the engine's recommended recipe, printed, at least as faithful "
    "as the dynamic baseline, with --recipe plain and static runtimes one option away" *
    doctest::timeout(300)) {
  testing::ScratchDir dir;
  const std::string with_model = " -m " + testing::kProjectModel + " --tokenizer " + testing::kProjectTokenizer + " -t 1";
  const std::string train = dir.path("train.txt"), heldout = dir.path("heldout.txt");
  testing::write_text(train, testing::tinystories_train().substr(0, 30000));
  testing::write_text(heldout, testing::tinystories_heldout().substr(0, 6000));
  REQUIRE(run_command(fedcal_model() + " calibrate -q --seq-len 128 --text " + train + " -o " + dir.path("s.stats") + with_model)
              .exit_code == 0);
  const auto quantize = [&](const std::string& options, const std::string& package) {
    return run_command(
        fedcal_model() + " quantize --stats " + dir.path("s.stats") + with_model + options + " -o " + dir.path(package) + " 2>&1",
        true);
  };
  const auto recommended = quantize("", "default.pkg");
  REQUIRE_MESSAGE(recommended.exit_code == 0, recommended.output);
  CHECK(recommended.output.find("[recipe] recommended for --runtime engine") != std::string::npos);
  CHECK(recommended.output.find("chosen: --method mse --per-channel --target-kl dynamic*0.8 --fallback fine-grained") !=
        std::string::npos);
  CHECK(recommended.output.find("[sensitivity] no --sensitivity-text") != std::string::npos);
  CHECK(recommended.output.find("layer(s) fine-grained") != std::string::npos);
  REQUIRE(quantize(" --recipe plain", "plain.pkg").exit_code == 0);
  const auto eval = [&](const std::string& options) {
    const auto result =
        run_command(fedcal_model() + " eval --json --text " + heldout + " --reference " + testing::kProjectModel + options);
    REQUIRE(result.exit_code == 0);
    return nlohmann::json::parse(result.output)["mean_kl"].get<double>();
  };
  const double dynamic = eval(" --activations dynamic --per-channel" + with_model);
  const double by_default = eval(" -m " + dir.path("default.pkg") + " -t 1");
  const double plain = eval(" -m " + dir.path("plain.pkg") + " -t 1");
  MESSAGE("held-out KL: default " << by_default << ", dynamic " << dynamic << ", plain " << plain);
  CHECK(by_default <= 1.1 * dynamic);
  CHECK(by_default < plain / 3);
  // A static-scale runtime: its recipe keeps the sensitive layers in FP32; the fine-grained mode is refused by name.
  const auto onnx = quantize(" --runtime onnx", "onnx.pkg");
  REQUIRE_MESSAGE(onnx.exit_code == 0, onnx.output);
  CHECK(onnx.output.find("--fallback fp32") != std::string::npos);
  CHECK(onnx.output.find("layer(s) in FP32") != std::string::npos);
  const auto refused = quantize(" --runtime xnnpack --fallback fine-grained", "x.pkg");
  CHECK(refused.exit_code != 0);
  CHECK(refused.output.find("--runtime xnnpack runs static INT8 scales only") != std::string::npos);
}

}  // namespace
}  // namespace fedcal
