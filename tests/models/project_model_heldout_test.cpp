// The project's own model (models/tinystories-1.8m) reproduces the held-out perplexity its
// metrics.json (and MODEL_CARD.md) state. CTest label "slow".
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "models/engine/evaluation.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

const std::string kModelDir = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";

// Scores the whole held-out split: 16 s in the optimized build, minutes under the sanitizers, so this
// file is the "slow" test binary: the sanitizer run of tests/run_all.sh skips its label.
TEST_CASE("Project model: held-out perplexity in the C++ engine equals the model card's (to 0.5%)" * doctest::timeout(600)) {
  const nlohmann::json metrics = nlohmann::json::parse(read_text_file(kModelDir + "/metrics.json"));
  LoadedModel loaded = load_model(kModelDir + "/model.bin");
  auto tokenizer = load_tokenizer(loaded, kModelDir + "/tokenizer.bin");
  const std::string heldout = testing::tinystories_heldout();
  XnnRuntime runtime(2);
  Transformer transformer(loaded.model, runtime);
  const EvalResult result = evaluate(transformer, nullptr, tokenizer->encode(heldout, true), heldout.size());
  CHECK(result.tokens == metrics["heldout_tokens_scored"].get<int64_t>());
  CHECK(result.perplexity == doctest::Approx(metrics["heldout_perplexity"].get<double>()).epsilon(0.005));
  CHECK(result.bits_per_byte == doctest::Approx(metrics["heldout_bits_per_byte"].get<double>()).epsilon(0.005));
}

}  // namespace
}  // namespace fedcal
