// The XNNPACK FP32 forward pass against the scalar reference, on random-weight models of several shapes.
#include <doctest/doctest.h>

#include <algorithm>
#include <random>
#include <thread>

#include "models/engine/transformer.h"
#include "models/format/synth.h"
#include "models/quant/quantize.h"
#include "tests/models/engine/reference_transformer.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

constexpr double kMaxRelativeError = 1e-4;

ModelConfig odd_config() {
  // Nothing a power of two: MQA (one KV head), untied head, a long-context theta.
  ModelConfig c;
  c.dim = 40;
  c.hidden_dim = 100;
  c.n_layers = 3;
  c.n_heads = 5;
  c.n_kv_heads = 1;
  c.vocab_size = 77;
  c.max_seq_len = 40;
  c.rope_theta = 500000.0f;
  c.norm_eps = 1e-6f;
  c.shared_classifier = false;
  return c;
}

std::vector<int> random_tokens(int count, int vocab, unsigned seed) {
  std::mt19937 rng(seed);
  std::vector<int> tokens(count);
  for (int& token : tokens) token = static_cast<int>(rng() % vocab);
  return tokens;
}

void check_against_reference(const ModelConfig& config, int threads, int max_batch) {
  CAPTURE(config.describe());
  CAPTURE(threads);
  CAPTURE(max_batch);
  const Model model = synthesize_model(config, 1234);
  const std::vector<int> tokens = random_tokens(std::min(config.max_seq_len, 23), config.vocab_size, 99);
  const auto expected = testing::reference_logits(model, tokens);
  XnnRuntime runtime(threads);

  // Batched prefill: all logits in one call (chunked by max_batch).
  Transformer prefill(model, runtime, {.max_batch = max_batch});
  std::span<const float> all = prefill.forward(tokens, 0, /*all_logits=*/true);
  for (size_t t = 0; t < tokens.size(); ++t) {
    CAPTURE(t);
    CHECK(testing::relative_error(all.subspan(t * config.vocab_size, config.vocab_size), expected[t]) <= kMaxRelativeError);
  }

  // Token-by-token decoding.
  Transformer decode(model, runtime, {.max_batch = max_batch});
  for (size_t t = 0; t < tokens.size(); ++t) {
    CAPTURE(t);
    std::span<const float> logits = decode.forward(std::span(&tokens[t], 1), static_cast<int>(t), false);
    CHECK(testing::relative_error(logits, expected[t]) <= kMaxRelativeError);
  }

  // A prefill of the first half, then decoding of the rest, continues the same KV cache.
  Transformer mixed(model, runtime, {.max_batch = max_batch});
  const size_t half = tokens.size() / 2;
  std::span<const float> last = mixed.forward(std::span(tokens.data(), half), 0, false);
  CHECK(testing::relative_error(last, expected[half - 1]) <= kMaxRelativeError);
  for (size_t t = half; t < tokens.size(); ++t) {
    last = mixed.forward(std::span(&tokens[t], 1), static_cast<int>(t), false);
    CHECK(testing::relative_error(last, expected[t]) <= kMaxRelativeError);
  }
}

TEST_CASE("XNNPACK FP32 logits equal the scalar reference: GQA, tied embedding") {
  check_against_reference(find_synth_preset("tiny").config, 1, 64);
}

TEST_CASE("XNNPACK FP32 logits equal the scalar reference: MHA, untied classifier") {
  check_against_reference(find_synth_preset("tiny-mha").config, 1, 64);
}

TEST_CASE("XNNPACK FP32 logits equal the scalar reference: MQA, odd sizes, prefill chunks of 4, 2 threads") {
  check_against_reference(odd_config(), 2, 4);
}

TEST_CASE("XNNPACK FP32 logits equal the scalar reference: 4-layer GQA model, 2 threads") {
  ModelConfig config = find_synth_preset("small").config;
  config.max_seq_len = 24;
  check_against_reference(config, 2, 7);
}

TEST_CASE("Forward rejects tokens outside the vocabulary and positions past the context") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 1);
  XnnRuntime runtime(1);
  Transformer transformer(model, runtime);
  const int bad_token = config.vocab_size;
  CHECK_THROWS_WITH(transformer.forward(std::span(&bad_token, 1), 0, false), doctest::Contains("outside the vocabulary"));
  const int good_token = 3;
  CHECK_THROWS_WITH(transformer.forward(std::span(&good_token, 1), config.max_seq_len, false),
                    doctest::Contains("exceed the context length"));
}

TEST_CASE("Greedy decoding is deterministic across runs and thread counts") {
  const ModelConfig config = find_synth_preset("tiny").config;
  const Model model = synthesize_model(config, 5);
  auto greedy = [&](int threads) {
    XnnRuntime runtime(threads);
    Transformer transformer(model, runtime);
    std::vector<int> out{1};
    std::span<const float> logits = transformer.forward(out, 0, false);
    for (int pos = 1; pos < 40; ++pos) {
      const int next = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
      out.push_back(next);
      logits = transformer.forward(std::span(&out.back(), 1), pos, false);
    }
    return out;
  };
  const auto first = greedy(1);
  CHECK(first == greedy(1));
  CHECK(first == greedy(2));
}

}  // namespace
}  // namespace fedcal

namespace fedcal {
namespace {

TEST_CASE("Default threads: one for small models, one per 16M parameters up to the physical cores") {
  CHECK(default_threads(1'800'000) == 1);  // the project's model: a pool costs more than it gives
  CHECK(default_threads(kParametersPerThread - 1) == 1);
  const int cores = default_threads(int64_t{1} << 50);  // a huge model: every physical core
  CHECK(cores >= 1);
  CHECK(cores <= static_cast<int>(std::max(1u, std::thread::hardware_concurrency())));
  CHECK(default_threads(2 * kParametersPerThread) == std::min(2, cores));
  CHECK(resolve_threads(3, 1'800'000) == 3);  // what the user asks for wins
  CHECK(resolve_threads(0, 1'800'000) == 1);
}

}  // namespace
}  // namespace fedcal

namespace fedcal {
namespace {

std::vector<float> all_logits(Transformer& transformer, const std::vector<int>& tokens) {
  const std::span<const float> logits = transformer.forward(tokens, 0, true);
  return {logits.begin(), logits.end()};
}

TEST_CASE("Transformer::consume frees the weights as it packs them and computes what the copying constructor does") {
  XnnRuntime runtime(1);
  const std::vector<int> tokens{1, 17, 299, 5, 42, 9};
  for (const char* preset : {"tiny", "tiny-mha", "tiny-qwen2"}) {  // tied and untied classifiers, biases
    CAPTURE(preset);
    const Model model = synthesize_model(find_synth_preset(preset).config, 3);
    QuantizeOptions per_channel;
    per_channel.per_channel = true;
    const QuantizedLinears int8 = quantize_model_weights(model, per_channel);  // every linear, the classifier too
    QuantizedLinears some = int8;
    some.erase("layers.1.w2");
    some.erase("classifier");
    for (const QuantizedLinears* layers : std::initializer_list<const QuantizedLinears*>{nullptr, &int8, &some}) {
      for (ActivationQuantization activations : {ActivationQuantization::kStatic, ActivationQuantization::kDynamic}) {
        if (layers == nullptr && activations == ActivationQuantization::kDynamic) continue;
        TransformerOptions options;
        options.activations = activations;
        // Static INT8 layers need activation scales: any valid ones do for an equality check.
        QuantizedLinears with_scales = layers ? *layers : QuantizedLinears{};
        for (auto& entry : with_scales) entry.second.input = entry.second.output = {0.05f, 0};
        Transformer copying(model, runtime, options, layers ? &with_scales : nullptr);
        Model moved = model;
        QuantizedLinears moved_int8 = with_scales;
        const std::unique_ptr<Transformer> consumed = Transformer::consume(std::move(moved), runtime, options, std::move(moved_int8));
        CHECK(all_logits(*consumed, tokens) == all_logits(copying, tokens));
        CHECK(consumed->resident_weight_bytes() == copying.resident_weight_bytes());
        // Nothing left behind in the sources.
        CHECK(moved.layers.empty());
        CHECK(moved.token_embedding.empty());
        CHECK(moved_int8.empty());
      }
    }
  }
}

TEST_CASE(
    "A tied classifier on the dynamic kernels is also the token table: looked up in its packed copy, held once, the same "
    "logits") {
  XnnRuntime runtime(1);
  const std::vector<int> tokens{1, 17, 299, 5, 42, 9};
  const Model model = synthesize_model(find_synth_preset("tiny").config, 3);  // tied
  for (const int bits : {8, 4}) {
    CAPTURE(bits);
    QuantizeOptions quantize;
    quantize.per_channel = true;
    quantize.weight_bits = bits;
    const QuantizedLinears layers = quantize_model_weights(model, quantize);
    // The same values as a separate table: held beside the classifier, as an untied model's is.
    QuantizedLinears with_table = layers;
    with_table.emplace("token_embedding", layers.at("classifier"));
    TransformerOptions options;
    options.activations = ActivationQuantization::kDynamic;
    Transformer once(model, runtime, options, &layers), twice(model, runtime, options, &with_table);
    CHECK(all_logits(once, tokens) == all_logits(twice, tokens));
    const QuantizedMatrix& table = layers.at("classifier").weights;
    const size_t table_bytes = table.values.size() + table.codes.size() + table.scales.size() * sizeof(float) +
                               table.group_scales.size() * sizeof(uint16_t);
    CHECK(twice.resident_weight_bytes() - once.resident_weight_bytes() == table_bytes);
  }
}

}  // namespace
}  // namespace fedcal
