// llama2.c (legacy, version 1) and Hugging Face checkpoints of the same weights load to the same model
// and give identical logits.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <functional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "models/engine/transformer.h"
#include "models/engine/vector_math.h"
#include "models/format/float16.h"
#include "models/format/gguf_model.h"
#include "models/format/hf_checkpoint.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "tests/error_of.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::error_of;

void check_same_weights(Model& actual, Model& expected) {
  REQUIRE(actual.config.dim == expected.config.dim);
  REQUIRE(actual.config.hidden_dim == expected.config.hidden_dim);
  REQUIRE(actual.config.n_layers == expected.config.n_layers);
  REQUIRE(actual.config.n_heads == expected.config.n_heads);
  REQUIRE(actual.config.n_kv_heads == expected.config.n_kv_heads);
  REQUIRE(actual.config.vocab_size == expected.config.vocab_size);
  REQUIRE(actual.config.max_seq_len == expected.config.max_seq_len);
  REQUIRE(actual.config.shared_classifier == expected.config.shared_classifier);
  auto a = list_tensors(actual), e = list_tensors(expected);
  REQUIRE(a.size() == e.size());
  for (size_t i = 0; i < a.size(); ++i) {
    CAPTURE(e[i].name);
    CHECK(*a[i].data == *e[i].data);
  }
}

std::vector<float> logits_of(const Model& model, const std::vector<int>& tokens) {
  XnnRuntime runtime(1);
  Transformer transformer(model, runtime);
  auto logits = transformer.forward(tokens, 0, true);
  return {logits.begin(), logits.end()};
}

TEST_CASE("llama2.c legacy, llama2.c version 1 and Hugging Face F32 checkpoints give identical logits") {
  for (const char* preset : {"tiny", "tiny-mha"}) {
    CAPTURE(preset);
    testing::ScratchDir dir;
    Model original = synthesize_model(find_synth_preset(preset).config, 77);
    write_llama2c_checkpoint(original, dir.path("legacy.bin"), Llama2cVersion::kLegacy);
    write_llama2c_checkpoint(original, dir.path("v1.bin"), Llama2cVersion::kVersion1);
    write_hf_checkpoint(original, dir.path("hf"), TensorDtype::kF32);

    LoadedModel legacy = load_model(dir.path("legacy.bin"));
    LoadedModel v1 = load_model(dir.path("v1.bin"));
    LoadedModel hf = load_model(dir.path("hf"));
    CHECK(legacy.format == ModelFormat::kLlama2cLegacy);
    CHECK(v1.format == ModelFormat::kLlama2cVersion1);
    CHECK(hf.format == ModelFormat::kHuggingFace);
    check_same_weights(legacy.model, original);
    check_same_weights(v1.model, original);
    check_same_weights(hf.model, original);

    const std::vector<int> tokens{1, 17, 42, 99, 3, 250, 7, 8, 9, 10};
    const auto expected = logits_of(original, tokens);
    CHECK(logits_of(legacy.model, tokens) == expected);
    CHECK(logits_of(v1.model, tokens) == expected);
    CHECK(logits_of(hf.model, tokens) == expected);
  }
}

TEST_CASE("F16 and BF16 safetensors convert to FP32 exactly as their rounding of the original weights") {
  testing::ScratchDir dir;
  Model original = synthesize_model(find_synth_preset("tiny").config, 3);
  for (TensorDtype dtype : {TensorDtype::kF16, TensorDtype::kBF16}) {
    CAPTURE(dtype_name(dtype));
    const std::string folder = dir.path(dtype_name(dtype));
    write_hf_checkpoint(original, folder, dtype);
    Model rounded = original;
    for (TensorRef& tensor : list_tensors(rounded)) {
      for (float& v : *tensor.data) v = dtype == TensorDtype::kF16 ? f16_to_f32(f32_to_f16(v)) : bf16_to_f32(f32_to_bf16(v));
    }
    LoadedModel loaded = load_model(folder);
    check_same_weights(loaded.model, rounded);
  }
}

TEST_CASE(
    "Hugging Face rotary permutation: HF layout rotates halves, fedcal's interleaved pairs, and the conversion round-trips") {
  const int heads = 2, head_size = 6, cols = 2;
  std::vector<float> interleaved(heads * head_size * cols);
  for (size_t i = 0; i < interleaved.size(); ++i) interleaved[i] = static_cast<float>(i / cols);  // value = row index
  const auto hf = interleaved_to_hf_rotary(interleaved, heads, head_size, cols);
  // HF row p * (head_size / 2) + i of a head holds interleaved row 2i + p.
  const std::vector<float> expected_rows{0, 2, 4, 1, 3, 5, 6, 8, 10, 7, 9, 11};
  for (int row = 0; row < heads * head_size; ++row) CHECK(hf[row * cols] == expected_rows[row]);
  CHECK(hf_to_interleaved_rotary(hf, heads, head_size, cols) == interleaved);
}

TEST_CASE("A checkpoint split over several safetensors files loads like one file") {
  testing::ScratchDir dir;
  Model original = synthesize_model(find_synth_preset("tiny-mha").config, 11);
  write_hf_checkpoint(original, dir.path("one"), TensorDtype::kF32);
  // Re-split: embedding and lm_head in one shard, everything else in another.
  SafetensorsFile whole(dir.path("one/model.safetensors"));
  std::vector<std::vector<float>> storage;
  std::vector<SafetensorsTensorToWrite> first, second;
  storage.reserve(whole.index().tensors.size());
  for (const auto& [name, entry] : whole.index().tensors) {
    storage.push_back(whole.read_f32(name, entry.shape));
    const bool outer = name == "model.embed_tokens.weight" || name == "lm_head.weight";
    (outer ? first : second).push_back({name, entry.shape, &storage.back()});
  }
  std::filesystem::create_directories(dir.path("split"));
  std::filesystem::copy_file(dir.path("one/config.json"), dir.path("split/config.json"));
  write_safetensors(dir.path("split/model-00001-of-00002.safetensors"), first, TensorDtype::kF32);
  write_safetensors(dir.path("split/model-00002-of-00002.safetensors"), second, TensorDtype::kF32);
  LoadedModel loaded = load_model(dir.path("split"));
  check_same_weights(loaded.model, original);
}

TEST_CASE("Llama 3 RoPE scaling: Meta's frequencies, kept by Hugging Face folders and packages, and it changes the logits") {
  ModelConfig config = find_synth_preset("tiny").config;
  config.rope_theta = 500000.0f;
  const std::vector<double> plain = config.rope_inverse_frequencies();
  config.rope_scaling = {8.0f, 1.0f, 4.0f, 64};
  const std::vector<double> scaled = config.rope_inverse_frequencies();
  REQUIRE(scaled.size() == plain.size());
  // Wavelengths below 64 / 4 = 16 positions are kept, above 64 / 1 stretched 8x, blended between.
  for (size_t i = 0; i < plain.size(); ++i) {
    const double wavelength = 2 * M_PI / plain[i];
    CAPTURE(wavelength);
    if (wavelength < 16) CHECK(scaled[i] == plain[i]);
    if (wavelength > 64) CHECK(scaled[i] == doctest::Approx(plain[i] / 8));
    if (wavelength >= 16 && wavelength <= 64) {
      CHECK(scaled[i] < plain[i]);
      CHECK(scaled[i] > plain[i] / 8);
    }
  }
  testing::ScratchDir dir;
  Model model = synthesize_model(config, 5);
  write_hf_checkpoint(model, dir.path("hf"), TensorDtype::kF32);
  LoadedModel hf = load_model(dir.path("hf"));
  CHECK(hf.model.config.rope_scaling == config.rope_scaling);
  write_model_package(dir.path("m.pkg"), model, {}, {}, {});
  LoadedModel package = load_model(dir.path("m.pkg"));
  CHECK(package.model.config.rope_scaling == config.rope_scaling);
  CHECK_THROWS_WITH(write_llama2c_checkpoint(model, dir.path("m.bin"), Llama2cVersion::kVersion1),
                    doctest::Contains("cannot hold RoPE scaling"));
  std::vector<int> tokens{1};
  for (int i = 0; i < 100; ++i) tokens.push_back(3 + i % 200);
  const auto with_scaling = logits_of(model, tokens);
  CHECK(logits_of(hf.model, tokens) == with_scaling);
  CHECK(logits_of(package.model, tokens) == with_scaling);
  Model unscaled = model;
  unscaled.config.rope_scaling = {};
  CHECK(logits_of(unscaled, tokens) != with_scaling);
}

// Checkpoints of the Llama variants and the logits of an independent PyTorch implementation
// (tests/reference/llama_reference.py; rebuilt by tests/reference/make_references.sh).
void check_against_pytorch(const std::string& folder, bool rope_scaling) {
  const nlohmann::json reference = nlohmann::json::parse(read_text_file(folder + "/reference_logits.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  testing::ScratchDir dir;
  for (const std::string& path : {folder, testing::transformers5_copy(dir, folder)}) {
    CAPTURE(path);
    const LoadedModel loaded = load_model(path);
    REQUIRE(loaded.model.config.rope_scaling.enabled() == rope_scaling);
    const std::vector<float> logits = logits_of(loaded.model, tokens);
    const size_t vocab = static_cast<size_t>(loaded.model.config.vocab_size);
    double worst = 0;
    for (size_t k = 0; k < reference["positions"].size(); ++k) {
      const size_t position = reference["positions"][k].get<size_t>();
      const std::vector<double> expected = reference["logits"][k].get<std::vector<double>>();
      double largest = 0, difference = 0;
      for (size_t v = 0; v < vocab; ++v) {
        largest = std::max(largest, std::fabs(expected[v]));
        difference = std::max(difference, std::fabs(logits[position * vocab + v] - expected[v]));
      }
      worst = std::max(worst, difference / largest);
    }
    MESSAGE("largest difference from PyTorch, relative to the largest logit: " << worst);
    CHECK(worst < 1e-4);
    // Greedy continuation of the first 8 tokens, token by token as generation runs it.
    XnnRuntime runtime(1);
    Transformer transformer(loaded.model, runtime);
    std::vector<int> sequence(tokens.begin(), tokens.begin() + 8);
    auto step = transformer.forward(sequence, 0, false);
    std::vector<int> greedy;
    for (size_t i = 0; i < reference["greedy"].size(); ++i) {
      const int next = argmax(step);
      greedy.push_back(next);
      step = transformer.forward(std::span(&next, 1), static_cast<int>(sequence.size() + i), false);
    }
    CHECK(greedy == reference["greedy"].get<std::vector<int>>());
  }
}

TEST_CASE("Llama 3 RoPE scaling, transformers 4.x and 5.x configs: logits equal an independent PyTorch implementation") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/reference/llama3-tiny";
  check_against_pytorch(folder, true);
  const nlohmann::json reference = nlohmann::json::parse(read_text_file(folder + "/reference_logits.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  // Without the scaling the same weights are measurably off: the comparison can fail.
  LoadedModel unscaled = load_model(folder);
  unscaled.model.config.rope_scaling = {};
  const std::vector<float> logits = logits_of(unscaled.model, tokens);
  const std::vector<double> last = reference["logits"].back().get<std::vector<double>>();
  const size_t position = reference["positions"].back().get<size_t>(), vocab = last.size();
  double difference = 0;
  for (size_t v = 0; v < vocab; ++v) difference = std::max(difference, std::fabs(logits[position * vocab + v] - last[v]));
  CHECK(difference > 1e-3);
}

TEST_CASE("Qwen3 (per-head q/k RMSNorm, explicit head_dim), transformers 4.x and 5.x configs: logits equal PyTorch's") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/reference/qwen3-tiny";
  check_against_pytorch(folder, false);
  LoadedModel loaded = load_model(folder);
  CHECK(loaded.model.config.qk_norm);
  CHECK(loaded.model.layers[0].q_norm.size() == 32u);
  // The norms matter: without them the same weights are measurably off.
  const nlohmann::json reference = nlohmann::json::parse(read_text_file(folder + "/reference_logits.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  for (LayerWeights& layer : loaded.model.layers) {
    std::fill(layer.q_norm.begin(), layer.q_norm.end(), 1.0f);
    std::fill(layer.k_norm.begin(), layer.k_norm.end(), 1.0f);
  }
  const std::vector<float> logits = logits_of(loaded.model, tokens);
  const std::vector<double> last = reference["logits"].back().get<std::vector<double>>();
  const size_t position = reference["positions"].back().get<size_t>();
  double difference = 0;
  for (size_t v = 0; v < last.size(); ++v) difference = std::max(difference, std::fabs(logits[position * last.size() + v] - last[v]));
  CHECK(difference > 1e-3);
  // Packages keep the norms.
  testing::ScratchDir dir;
  const LoadedModel original = load_model(folder);
  write_model_package(dir.path("q.pkg"), original.model, {}, {}, {});
  const LoadedModel package = load_model(dir.path("q.pkg"));
  CHECK(package.model.config.qk_norm);
  CHECK(logits_of(package.model, tokens) == logits_of(original.model, tokens));
}

TEST_CASE("SmolLM2-shaped Llama (9 query / 3 key-value heads, theta 100000, tied), transformers 4.x and 5.x: logits equal PyTorch's") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/reference/smollm2-tiny";
  check_against_pytorch(folder, false);
  const LoadedModel loaded = load_model(folder);
  CHECK(loaded.model.config.n_heads == 9);
  CHECK(loaded.model.config.n_kv_heads == 3);
  CHECK(loaded.model.config.head_dim == 0);  // hidden_size / heads
  CHECK(loaded.model.config.rope_theta == 100000.0f);
}

// Calibrates `model` on a few tokens, quantizes it (minmax), packages it, and returns the relative RMS
// error of the package's logits against FP32 with `activations`; `check` sees the package.
double int8_relative_error(const Model& model, bool per_channel, ActivationQuantization activations,
                           const std::function<void(const LoadedModel&)>& check = {}) {
  XnnRuntime runtime(1);
  Transformer fp32(model, runtime);
  CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model));
  StatsRecorder recorder(stats);
  fp32.set_observer(&recorder);
  const std::vector<int> tokens{1, 5, 9, 200, 31, 7, 64, 300, 2, 11};
  const auto expected_span = fp32.forward(tokens, 0, true);
  const std::vector<float> expected(expected_span.begin(), expected_span.end());
  fp32.set_observer(nullptr);
  QuantizeOptions options;
  options.method = ScaleMethodSpec::parse("minmax");
  options.per_channel = per_channel;
  const QuantizedLinears int8 = quantize_model(model, stats, options);
  testing::ScratchDir dir;
  write_model_package(dir.path("m.pkg"), model, int8, {}, {});
  const LoadedModel package = load_model(dir.path("m.pkg"));
  if (check) check(package);
  TransformerOptions run_options;
  run_options.activations = activations;
  Transformer quantized(package.model, runtime, run_options, &package.int8);
  const auto actual = quantized.forward(tokens, 0, true);
  double error = 0, norm = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    error += (actual[i] - expected[i]) * (actual[i] - expected[i]);
    norm += expected[i] * expected[i];
  }
  return std::sqrt(error / norm);
}

TEST_CASE("Qwen2 (q/k/v biases), transformers 4.x and 5.x configs: logits equal PyTorch's, INT8 folds the biases") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/reference/qwen2-tiny";
  check_against_pytorch(folder, false);
  LoadedModel loaded = load_model(folder);
  CHECK(loaded.model.config.qkv_bias);
  CHECK(loaded.model.layers[0].bk.size() == 32u);
  const nlohmann::json reference = nlohmann::json::parse(read_text_file(folder + "/reference_logits.json"));
  const std::vector<int> tokens = reference["tokens"].get<std::vector<int>>();
  const std::vector<float> with_biases = logits_of(loaded.model, tokens);
  // Packages and GGUF (llama.cpp's qwen2: NEOX rows, attn_q.bias) keep the biases exactly.
  testing::ScratchDir dir;
  write_model_package(dir.path("q.pkg"), loaded.model, {}, {}, {});
  const LoadedModel package = load_model(dir.path("q.pkg"));
  CHECK(package.model.config.qkv_bias);
  CHECK(logits_of(package.model, tokens) == with_biases);
  std::vector<TokenizerPiece> pieces = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  while (pieces.size() < 512) pieces.push_back({fmt::format("<0x{:02X}>", pieces.size() - 3), 0});
  write_gguf_model(dir.path("q.gguf"), loaded.model, {"llama2c", Llama2cTokenizer(std::move(pieces)).serialize()}, {});
  const LoadedModel gguf = load_model(dir.path("q.gguf"));
  CHECK(gguf.model.config.qkv_bias);
  CHECK(logits_of(gguf.model, tokens) == with_biases);
  // INT8: static (per tensor and per channel; the biases folded into the INT32 accumulators) and
  // dynamic activations, each close to FP32.
  for (bool per_channel : {false, true}) {
    for (ActivationQuantization activations : {ActivationQuantization::kStatic, ActivationQuantization::kDynamic}) {
      const double error = int8_relative_error(loaded.model, per_channel, activations);
      MESSAGE("qwen2-tiny INT8 relative error (per channel " << per_channel << ", dynamic "
                                                             << (activations == ActivationQuantization::kDynamic) << "): " << error);
      CHECK(error < 0.1);
    }
  }
  // A llama2.c checkpoint cannot hold them: refused.
  CHECK(error_of([&] { write_llama2c_checkpoint(loaded.model, dir.path("m.bin"), Llama2cVersion::kVersion1); })
            .find("cannot hold q/k/v biases") != std::string::npos);
  // The biases matter: without them the same weights are measurably off.
  for (LayerWeights& layer : loaded.model.layers) {
    for (std::vector<float>* bias : {&layer.bq, &layer.bk, &layer.bv}) std::fill(bias->begin(), bias->end(), 0.0f);
  }
  const std::vector<float> without = logits_of(loaded.model, tokens);
  double difference = 0;
  for (size_t i = 0; i < without.size(); ++i) difference = std::max(difference, double(std::fabs(without[i] - with_biases[i])));
  CHECK(difference > 1e-2);
}

TEST_CASE("An explicit head_dim (q wider than the residual stream), transformers 4.x and 5.x configs: logits equal PyTorch's") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/reference/head-dim-tiny";
  check_against_pytorch(folder, false);
  const LoadedModel loaded = load_model(folder);
  CHECK(loaded.model.config.q_dim() == 128);
  CHECK(loaded.model.config.dim == 64);
  // Calibrated (the q and attention-output points are 128 wide), quantized, packaged, and run.
  CHECK(int8_relative_error(loaded.model, true, ActivationQuantization::kStatic, [](const LoadedModel& package) {
          CHECK(package.model.config.head_dim == 32);
          CHECK(package.int8.at("layers.0.wo").weights.cols == 128);
        }) < 0.1);
}

}  // namespace
}  // namespace fedcal
