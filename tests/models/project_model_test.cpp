// The project's own TinyStories model (models/tinystories-1.8m): both committed formats load and agree,
// the C++ engine reproduces the PyTorch logits the training script stored, and the held-out
// perplexity is the one its metrics.json (and MODEL_CARD.md) state.
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
const std::string kMhaModelDir = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-mha-0.7m";
const std::string kTwoDomainModelDir = std::string(FEDCAL_SOURCE_DIR) + "/models/tinystories-kjv-1.8m";

TEST_CASE("Project model: llama2.c and Hugging Face exports give identical logits, equal to PyTorch's") {
  const nlohmann::json reference = nlohmann::json::parse(read_text_file(kModelDir + "/reference_logits.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  const int vocab = reference["vocab_size"].get<int>();

  LoadedModel llama2c = load_model(kModelDir + "/model.bin");
  LoadedModel hf = load_model(kModelDir + "/hf");
  REQUIRE(llama2c.model.config.vocab_size == vocab);
  XnnRuntime runtime(1);
  Transformer a(llama2c.model, runtime), b(hf.model, runtime);
  const auto logits_a = a.forward(tokens, 0, true);
  const std::vector<float> copy_a(logits_a.begin(), logits_a.end());
  const auto logits_b = b.forward(tokens, 0, true);
  CHECK(std::vector<float>(logits_b.begin(), logits_b.end()) == copy_a);

  const auto& rows = reference["logits"];
  REQUIRE(rows.size() == tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) {
    CAPTURE(t);
    const std::vector<double> expected = rows[t].get<std::vector<double>>();
    CHECK(testing::relative_error(std::span(copy_a).subspan(t * vocab, vocab), expected) <= 1e-4);
  }

  // The committed tokenizers agree with each other on the probe text.
  auto bin_tokenizer = load_tokenizer(llama2c, kModelDir + "/tokenizer.bin");
  auto hf_tokenizer = load_tokenizer(hf, std::nullopt);
  const std::string probe = "Once upon a time, there was a little girl named Lily. She loved to play";
  CHECK(bin_tokenizer->encode(probe, true) == tokens);
  CHECK(hf_tokenizer->encode(probe, true) == tokens);
}

// A committed model's llama2.c checkpoint against the PyTorch logits its training run stored; its shape.
ModelConfig check_against_pytorch(const std::string& dir) {
  const nlohmann::json reference = nlohmann::json::parse(read_text_file(dir + "/reference_logits.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  const int vocab = reference["vocab_size"].get<int>();
  LoadedModel loaded = load_model(dir + "/model.bin");
  REQUIRE(loaded.model.config.vocab_size == vocab);
  XnnRuntime runtime(1);
  Transformer transformer(loaded.model, runtime);
  const auto logits = transformer.forward(tokens, 0, true);
  const auto& rows = reference["logits"];
  REQUIRE(rows.size() == tokens.size());
  for (size_t t = 0; t < tokens.size(); ++t) {
    CAPTURE(t);
    CHECK(testing::relative_error(logits.subspan(t * vocab, vocab), rows[t].get<std::vector<double>>()) <= 1e-4);
  }
  auto tokenizer = load_tokenizer(loaded, dir + "/tokenizer.bin");
  CHECK(tokenizer->encode("Once upon a time, there was a little girl named Lily. She loved to play", true) == tokens);
  return loaded.model.config;
}

TEST_CASE(
    "Second model (models/tinystories-mha-0.7m): the llama2.c checkpoint's logits equal PyTorch's, its tokenizer the "
    "reference's") {
  const ModelConfig config = check_against_pytorch(kMhaModelDir);
  CHECK(config.n_kv_heads == config.n_heads);  // multi-head: the other attention shape
}

TEST_CASE(
    "Two-domain model (models/tinystories-kjv-1.8m): the llama2.c checkpoint's logits equal PyTorch's, its tokenizer the "
    "reference's") {
  check_against_pytorch(kTwoDomainModelDir);
}

}  // namespace
}  // namespace fedcal
