// Quantization-aware training trains the model the engine runs: the fake-quantized forward of
// models/train/qat_int4.py (PyTorch, qat_int4_reference.json: `qat_int4.py --reference-only` on the
// project model) equals the engine's 4-bit forward of the same checkpoint quantized with
// `--int4-rounding absmax`, up to FP32 rounding.
#include <doctest/doctest.h>

#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/quant/quantize.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

// The largest relative error over the rows of `logits` (tokens, vocab) against PyTorch's rows.
double worst_row_error(std::span<const float> logits, const nlohmann::json& rows, int vocab) {
  double worst = 0;
  for (size_t t = 0; t < rows.size(); ++t) {
    const std::vector<double> expected = rows[t].get<std::vector<double>>();
    worst = std::max(
        worst, testing::relative_error(logits.subspan(t * static_cast<size_t>(vocab), static_cast<size_t>(vocab)), expected));
  }
  return worst;
}

TEST_CASE("QAT's fake-quantized forward (PyTorch) equals the engine's 4-bit forward with absmax rounding, within FP32 rounding") {
  const std::string model_dir = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-1.8m";
  const nlohmann::json reference =
      nlohmann::json::parse(read_text_file(std::string(FEDCAL_SOURCE_DIR) + "/tests/models/quant/qat_int4_reference.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  const int vocab = reference["vocab_size"].get<int>();
  const nlohmann::json& rows = reference["logits"];
  REQUIRE(rows.size() == tokens.size());

  const LoadedModel loaded = load_model(model_dir + "/model.bin");
  REQUIRE(loaded.model.config.vocab_size == vocab);
  XnnRuntime runtime(1);
  TransformerOptions fine_grained;
  fine_grained.activations = ActivationQuantization::kDynamicBlocks;
  auto error_with = [&](Int4Rounding rounding) {
    QuantizeOptions options;
    options.weight_bits = 4;
    options.four_bit_rounding = rounding;
    const QuantizedLinears four_bit = quantize_model_weights(loaded.model, options);
    Transformer transformer(loaded.model, runtime, fine_grained, &four_bit);
    return worst_row_error(transformer.forward(tokens, 0, true), rows, vocab);
  };
  const double absmax = error_with(Int4Rounding::kAbsmax);
  const double search = error_with(Int4Rounding::kSearch);
  Transformer fp32(loaded.model, runtime);
  const double unquantized = worst_row_error(fp32.forward(tokens, 0, true), rows, vocab);
  MESSAGE("largest relative error against PyTorch's fake-quantized logits: absmax-rounded 4-bit engine "
          << absmax << ", search-rounded " << search << ", FP32 engine " << unquantized);
  CHECK(absmax <= 1e-4);
  // What the comparison tells apart: the other rounding, and no quantization at all.
  CHECK(search > 10 * absmax);
  CHECK(unquantized > 10 * absmax);
}

}  // namespace
}  // namespace fedcal
