// Gemma 3 (models/family/gemma3.cpp): a tiny checkpoint in the transformers 4.x and 5.x config
// layouts against an independent float64 PyTorch implementation (tests/reference/llama_reference.py,
// tests/reference/gemma3-tiny: 2 local layers with a window of 16 and 1 global; 100 tokens and a
// 72-token greedy context run past the window), each of its variations shown to matter, and what
// packages, Hugging Face folders, INT8 and the other formats do with it.
#include <doctest/doctest.h>

#include <cmath>
#include <filesystem>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "common/file_util.h"
#include "common/mapped_file.h"
#include "models/engine/transformer.h"
#include "models/engine/vector_math.h"
#include "models/family/family.h"
#include "models/format/ggml_types.h"
#include "models/format/gguf.h"
#include "models/format/gguf_model.h"
#include "models/format/hf_checkpoint.h"
#include "models/format/hf_config.h"
#include "models/format/llama2c_checkpoint.h"
#include "models/format/model_loader.h"
#include "models/format/model_package.h"
#include "models/format/synth.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"
#include "models/quant/smoothing.h"
#include "models/tokenizer/llama2c_tokenizer.h"
#include "tests/error_of.h"
#include "tests/models/format/hf_config_variants.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

const std::string kFolder = FEDCAL_SOURCE_DIR "/tests/reference/gemma3-tiny";

struct GemmaReference {
  std::vector<int> tokens, greedy;
  std::vector<size_t> positions;
  std::vector<std::vector<double>> logits;
};

GemmaReference read_gemma_reference(const std::string& folder = kFolder) {
  const nlohmann::json json = nlohmann::json::parse(read_text_file(folder + "/reference_logits.json"));
  return {json["tokens"].get<std::vector<int>>(), json["greedy"].get<std::vector<int>>(),
          json["positions"].get<std::vector<size_t>>(), json["logits"].get<std::vector<std::vector<double>>>()};
}

std::vector<float> gemma_logits(const Model& model, const std::vector<int>& tokens) {
  XnnRuntime runtime(1);
  Transformer transformer(model, runtime);
  const auto logits = transformer.forward(tokens, 0, true);
  return {logits.begin(), logits.end()};
}

// The largest difference from the reference's logits at its positions, relative to each position's
// largest logit.
double relative_difference(const std::vector<float>& logits, const GemmaReference& reference) {
  double worst = 0;
  for (size_t k = 0; k < reference.positions.size(); ++k) {
    const std::vector<double>& expected = reference.logits[k];
    const size_t vocab = expected.size(), position = reference.positions[k];
    double largest = 0, difference = 0;
    for (size_t v = 0; v < vocab; ++v) {
      largest = std::max(largest, std::fabs(expected[v]));
      difference = std::max(difference, std::fabs(logits[position * vocab + v] - expected[v]));
    }
    worst = std::max(worst, difference / largest);
  }
  return worst;
}

// The reference's greedy continuation of its first `prompt` tokens, one token at a time through the
// KV cache as generation runs it.
std::vector<int> greedy_continuation(Transformer& transformer, const GemmaReference& reference, size_t prompt) {
  const std::vector<int> start(reference.tokens.begin(), reference.tokens.begin() + static_cast<std::ptrdiff_t>(prompt));
  auto step = transformer.forward(start, 0, false);
  std::vector<int> greedy;
  for (size_t i = 0; i < reference.greedy.size(); ++i) {
    const int next = argmax(step);
    greedy.push_back(next);
    step = transformer.forward(std::span(&next, 1), static_cast<int>(prompt + i), false);
  }
  return greedy;
}

TEST_CASE("Gemma 3, transformers 4.x and 5.x configs: logits equal PyTorch's, greedy text identical past the sliding window") {
  const GemmaReference reference = read_gemma_reference();
  REQUIRE(reference.greedy.size() == 64);
  testing::ScratchDir dir;
  for (const std::string& path : {kFolder, testing::transformers5_copy(dir, kFolder)}) {
    CAPTURE(path);
    const LoadedModel loaded = load_model(path);
    const ModelConfig& c = loaded.model.config;
    CHECK(std::string(family_of(c).name) == "gemma3");
    CHECK(c.local_layers == std::vector<uint8_t>{1, 1, 0});
    CHECK(c.sliding_window == 16);
    CHECK(c.query_scale_dim == 24.0f);
    CHECK(c.rope_theta == 1000000.0f);
    CHECK(c.rope_local_theta == 10000.0f);
    CHECK(c.shared_classifier);
    const double difference = relative_difference(gemma_logits(loaded.model, reference.tokens), reference);
    MESSAGE("largest difference from PyTorch, relative to the largest logit: " << difference);
    CHECK(difference < 1e-4);
    // Greedy continuation of the first 8 tokens, one token at a time through the KV cache: 72
    // positions, 4.5 windows.
    XnnRuntime runtime(1);
    Transformer transformer(loaded.model, runtime);
    CHECK(greedy_continuation(transformer, reference, 8) == reference.greedy);
  }
}

TEST_CASE("Gemma 3 with linear RoPE scaling of its global layers (as 4B and up), 4.x and 5.x configs: logits equal PyTorch's") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/reference/gemma3-linear-tiny";
  const GemmaReference reference = read_gemma_reference(folder);
  testing::ScratchDir dir;
  for (const std::string& path : {folder, testing::transformers5_copy(dir, folder)}) {
    CAPTURE(path);
    const Model model = load_model(path).model;
    CHECK(model.config.rope_linear_factor == 4.0f);
    const double difference = relative_difference(gemma_logits(model, reference.tokens), reference);
    MESSAGE("linear RoPE scaling: largest difference from PyTorch, relative to the largest logit: " << difference);
    CHECK(difference < 1e-4);
  }
  // The scaling matters, it survives a package, and the local layers are not scaled.
  const Model model = load_model(folder).model;
  Model unscaled = model;
  unscaled.config.rope_linear_factor = 0;
  CHECK(relative_difference(gemma_logits(unscaled, reference.tokens), reference) > 1e-3);
  write_model_package(dir.path("g.pkg"), model, {}, {}, {});
  const Model package = load_model(dir.path("g.pkg")).model;
  CHECK(package.config.rope_linear_factor == 4.0f);
  CHECK(gemma_logits(package, reference.tokens) == gemma_logits(model, reference.tokens));
  CHECK(model.config.local_rope_tables().cos == unscaled.config.local_rope_tables().cos);
}

TEST_CASE("Gemma 3's local layers keep only their window in the KV cache: the same logits and greedy text in any chunk size") {
  const GemmaReference reference = read_gemma_reference();
  const Model model = load_model(kFolder).model;
  XnnRuntime runtime(1);
  Transformer whole(model, runtime);  // chunks of 64: a ring of 16 + 63 slots is no smaller than the 128 positions
  const auto expected_span = whole.forward(reference.tokens, 0, true);
  const std::vector<float> expected(expected_span.begin(), expected_span.end());
  for (const int chunk : {1, 3, 7}) {
    CAPTURE(chunk);
    TransformerOptions options;
    options.max_batch = chunk;
    Transformer windowed(model, runtime, options);
    // Two local layers in rings of 16 + chunk - 1 slots, twice over, and one global layer of 128.
    const size_t row_bytes = 2 * size_t(model.config.kv_dim()) * sizeof(float);
    CHECK(windowed.kv_cache_bytes() == (2 * 2 * size_t(16 + chunk - 1) + 128) * row_bytes);
    CHECK(windowed.kv_cache_bytes() < whole.kv_cache_bytes());
    const auto logits = windowed.forward(reference.tokens, 0, true);  // 100 positions, many times round each ring
    double worst = 0;
    for (size_t i = 0; i < expected.size(); ++i) worst = std::max(worst, double(std::fabs(logits[i] - expected[i])));
    MESSAGE("chunks of " << chunk << ": largest logit difference " << worst);
    CHECK(worst < 1e-4);
    // Greedy decoding, one position at a time: the reference's 64 tokens.
    CHECK(greedy_continuation(windowed, reference, 8) == reference.greedy);
  }
}

TEST_CASE("Gemma 3: without the sliding window, the (1 + w) norms or the embedding scale the logits are measurably off") {
  const GemmaReference reference = read_gemma_reference();
  const Model model = load_model(kFolder).model;
  REQUIRE(relative_difference(gemma_logits(model, reference.tokens), reference) < 1e-4);
  struct Variant {
    const char* name;
    void (*change)(ModelConfig&);
  };
  const Variant variants[] = {
      {"every position seen by the local layers", [](ModelConfig& c) { c.sliding_window = c.max_seq_len; }},
      {"norms by w, not 1 + w", [](ModelConfig& c) { c.norm_plus_one = false; }},
      {"embeddings not scaled", [](ModelConfig& c) { c.embedding_scale = false; }},
      {"SwiGLU for GeGLU", [](ModelConfig& c) { c.gelu_tanh = false; }},
      {"scores by 1/sqrt(head size)", [](ModelConfig& c) { c.query_scale_dim = 0; }},
      {"local layers at the global RoPE base", [](ModelConfig& c) { c.rope_local_theta = c.rope_theta; }},
  };
  for (const Variant& variant : variants) {
    const std::string name = variant.name;
    CAPTURE(name);
    Model changed = model;
    variant.change(changed.config);
    const double difference = relative_difference(gemma_logits(changed, reference.tokens), reference);
    MESSAGE(name << ": " << difference);
    CHECK(difference > 1e-3);
  }
}

TEST_CASE(
    "Gemma 3 in packages and Hugging Face folders, static INT8 and fine-grained, and llama2.c and a GGUF of another layer "
    "pattern refuse it by name") {
  const GemmaReference reference = read_gemma_reference();
  const Model model = load_model(kFolder).model;
  const std::vector<float> expected = gemma_logits(model, reference.tokens);
  testing::ScratchDir dir;
  write_model_package(dir.path("g.pkg"), model, {}, {}, {});
  const LoadedModel package = load_model(dir.path("g.pkg"));
  CHECK(package.model.config.features() == gemma3_family().features);
  CHECK(package.model.config.local_layers == model.config.local_layers);
  CHECK(gemma_logits(package.model, reference.tokens) == expected);
  write_hf_checkpoint(model, dir.path("hf"), TensorDtype::kF32);
  const LoadedModel hf = load_model(dir.path("hf"));
  CHECK(hf.model.config.describe() == model.config.describe());
  CHECK(gemma_logits(hf.model, reference.tokens) == expected);

  // Calibrated on the reference tokens (past the window), then static INT8 per channel, and
  // fine-grained (groups of 32, activations per block): each close to FP32.
  XnnRuntime runtime(1);
  Transformer fp32(model, runtime);
  CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model));
  StatsRecorder recorder(stats);
  fp32.set_observer(&recorder);
  fp32.forward(reference.tokens, 0, true);
  for (const bool fine_grained : {false, true}) {
    CAPTURE(fine_grained);
    QuantizeOptions options;
    options.method = ScaleMethodSpec::parse("minmax");
    options.per_channel = true;
    if (fine_grained) {
      for (const LinearSite& site : linear_sites(model.config)) options.fine_grained.insert(site.name);
    }
    const QuantizedLinears int8 = quantize_model(model, stats, options);
    write_model_package(dir.path("q.pkg"), model, int8, {}, {});
    const LoadedModel quantized_package = load_model(dir.path("q.pkg"));
    Transformer quantized(quantized_package.model, runtime, {}, &quantized_package.int8);
    const auto actual = quantized.forward(reference.tokens, 0, true);
    double error = 0, norm = 0;
    for (size_t i = 0; i < expected.size(); ++i) {
      error += (actual[i] - expected[i]) * (actual[i] - expected[i]);
      norm += double(expected[i]) * expected[i];
    }
    MESSAGE("gemma3-tiny INT8 relative error (fine-grained " << fine_grained << "): " << std::sqrt(error / norm));
    CHECK(std::sqrt(error / norm) < (fine_grained ? 0.05 : 0.1));
  }

  // llama.cpp's gemma3 makes every 6th layer global: this one's 3-layer pattern is refused by name.
  const PackageTokenizer tokenizer{"llama2c", {}};
  CHECK(testing::error_of([&] { write_gguf_model(dir.path("g.gguf"), model, tokenizer, {}); }).find("every 6th layer global") !=
        std::string::npos);
  CHECK(testing::error_of([&] {
          write_llama2c_checkpoint(model, dir.path("g.bin"), Llama2cVersion::kVersion1);
        }).find("cannot hold") != std::string::npos);
}

TEST_CASE("Gemma 3: smoothing factors folded at every site leave the FP32 function unchanged (into (1 + w) norms)") {
  const GemmaReference reference = read_gemma_reference();
  const Model model = load_model(kFolder).model;
  const std::vector<float> expected = gemma_logits(model, reference.tokens);
  Model smoothed = model;
  const ModelConfig& c = model.config;
  for (int l = 0; l < c.n_layers; ++l) {
    for (const SmoothingSite site :
         {SmoothingSite::kAttnIn, SmoothingSite::kAttnOut, SmoothingSite::kFfnIn, SmoothingSite::kFfnHidden}) {
      const size_t channels = site == SmoothingSite::kAttnOut     ? size_t(c.kv_dim())
                              : site == SmoothingSite::kFfnHidden ? size_t(c.hidden_dim)
                                                                  : size_t(c.dim);
      std::vector<float> factors(channels);
      for (size_t i = 0; i < channels; ++i) factors[i] = 0.5f + static_cast<float>((i * 37 + static_cast<size_t>(l)) % 16) / 8.0f;
      fold_smoothing(smoothed, l, site, factors);
    }
  }
  CHECK(smoothed.layers[0].attn_norm != model.layers[0].attn_norm);
  const std::vector<float> logits = gemma_logits(smoothed, reference.tokens);
  double worst = 0, largest = 0;
  for (size_t i = 0; i < expected.size(); ++i) {
    worst = std::max(worst, double(std::fabs(logits[i] - expected[i])));
    largest = std::max(largest, double(std::fabs(expected[i])));
  }
  MESSAGE("smoothed vs plain: largest logit difference " << worst << " of " << largest);
  CHECK(worst < 1e-4 * largest);
  // Folded as if the norms scaled by w (the (1 + w) offset ignored), the function would change.
  Model wrong = model;
  wrong.config.norm_plus_one = false;
  std::vector<float> factors(static_cast<size_t>(c.dim), 2.0f);
  fold_smoothing(wrong, 0, SmoothingSite::kAttnIn, factors);
  wrong.config.norm_plus_one = true;
  const std::vector<float> off = gemma_logits(wrong, reference.tokens);
  double moved = 0;
  for (size_t i = 0; i < expected.size(); ++i) moved = std::max(moved, double(std::fabs(off[i] - expected[i])));
  CHECK(moved > 1e-2 * largest);
}

TEST_CASE("Gemma 3 as GGUF (llama.cpp's gemma3): written and read back to the same logits, norms stored as 1 + w") {
  const Model model = synthesize_model(find_synth_preset("tiny-gemma3-gguf").config, 3);
  std::vector<TokenizerPiece> pieces = {{"<unk>", 0}, {"\n<s>\n", 0}, {"\n</s>\n", 0}};
  while (pieces.size() < 512) pieces.push_back({fmt::format("<0x{:02X}>", pieces.size() - 3), 0});
  const PackageTokenizer tokenizer{"llama2c", Llama2cTokenizer(std::move(pieces)).serialize()};
  testing::ScratchDir dir;
  write_gguf_model(dir.path("g.gguf"), model, tokenizer, {});
  const MappedFile mapped(dir.path("g.gguf"));
  const GgufFile file = parse_gguf(mapped.bytes(), "g.gguf");
  CHECK(file.text("general.architecture") == "gemma3");
  CHECK(file.integer("gemma3.attention.sliding_window") == 16);
  CHECK(file.integer("gemma3.attention.key_length") == 32);
  // llama.cpp multiplies by a norm's stored weights: Gemma's (1 + w) is stored whole.
  const GgufTensorInfo* norm = file.find_tensor("blk.0.post_ffw_norm.weight");
  REQUIRE(norm != nullptr);
  std::vector<float> stored(model.layers[0].post_ffn_norm.size());
  ggml_decode(norm->type, file.tensor_bytes(*norm), stored);
  for (size_t i = 0; i < stored.size(); ++i) CHECK(stored[i] == model.layers[0].post_ffn_norm[i] + 1.0f);
  CHECK(file.find_tensor("blk.5.attn_q_norm.weight") != nullptr);
  CHECK(file.find_tensor("output.weight") == nullptr);  // tied

  const GgufModel read = read_gguf_model(dir.path("g.gguf"));
  CHECK(read.model.config.describe() == model.config.describe());
  CHECK(read.model.config.local_layers == model.config.local_layers);
  const std::vector<int> tokens = [] {
    std::vector<int> out;
    for (int i = 0; i < 60; ++i) out.push_back((i * 37 + 5) % 512);  // past the window of 16
    return out;
  }();
  CHECK(gemma_logits(read.model, tokens) == gemma_logits(model, tokens));  // bit for bit
  // Linear RoPE scaling (Gemma 3 4B and up) as llama.cpp's rope.scaling keys.
  Model scaled = model;
  scaled.config.rope_linear_factor = 8.0f;
  write_gguf_model(dir.path("scaled.gguf"), scaled, tokenizer, {});
  const GgufModel scaled_read = read_gguf_model(dir.path("scaled.gguf"));
  CHECK(scaled_read.model.config.rope_linear_factor == 8.0f);
  CHECK(gemma_logits(scaled_read.model, tokens) == gemma_logits(scaled, tokens));
  // A key llama.cpp's gemma3 does not have is refused, as for every architecture.
  GgufWriter extra = gguf_from_model(model, tokenizer, {});
  extra.set("gemma3.attention.layer_types", GgufValue::u32(1));
  const std::vector<std::byte> bytes = extra.serialize();
  CHECK(testing::error_of([&] { model_from_gguf(parse_gguf(bytes, "extra.gguf")); }).find("gemma3.attention.layer_types") !=
        std::string::npos);
}

// What a config computes: the model's description and its token ids; nullopt when refused.
std::optional<std::string> outcome(const nlohmann::json& json) {
  try {
    const HfConfig config = parse_hf_config(json.dump(), "config.json");
    std::string ids;
    for (size_t l = 0; l < config.model.local_layers.size(); ++l)
      ids += config.model.local_layer(static_cast<int>(l)) ? 'L' : 'G';
    return config.model.describe() + " " + ids + " bos " + std::to_string(config.bos_token_id.value_or(-1)) + " eos " +
           std::to_string(config.eos_token_id.value_or(-1));
  } catch (const Error&) {
    return std::nullopt;
  }
}

TEST_CASE("Gemma 3 270M and 1B config.json, transformers 4.x and 5.x: read alike, and every key used, checked or refused") {
  const std::string folder = FEDCAL_SOURCE_DIR "/tests/models/family/configs/";
  size_t keys = 0, refused = 0;
  for (const char* name : {"gemma-3-270m", "gemma-3-1b"}) {
    CAPTURE(name);
    const nlohmann::json v4 = nlohmann::json::parse(read_text_file(folder + name + ".4.json"));
    const nlohmann::json v5 = nlohmann::json::parse(read_text_file(folder + name + ".5.json"));
    const std::optional<std::string> read = outcome(v4);
    REQUIRE(read);
    CHECK(outcome(v5) == read);
    const ModelConfig c = parse_hf_config(v4.dump(), name).model;
    CHECK(std::string(family_of(c).name) == "gemma3");
    CHECK(c.head_size() == 256);
    CHECK(c.query_scale_dim == 256.0f);
    CHECK(c.sliding_window == 512);
    CHECK(c.vocab_size == 262144);
    CHECK(c.shared_classifier);  // Gemma 3 ties its embeddings when config.json does not say
    for (int l = 0; l < c.n_layers; ++l) CHECK(c.local_layer(l) == ((l + 1) % 6 != 0));
    // Each key changed changes what is read or is refused, unless the catalogue says why it cannot.
    for (const nlohmann::json& base : {v4, v5}) {
      for (const auto& item : base.items()) {
        const std::string key = item.key();
        CAPTURE(key);
        nlohmann::json variant = base;
        variant[key] = testing::changed(item.value());
        const std::optional<std::string> result = outcome(variant);
        ++keys;
        refused += result ? 0 : 1;
        if (result == outcome(base)) CHECK(testing::use_of(key) == HfKeyUse::kNoEffect);
      }
    }
  }
  MESSAGE(keys << " keys changed one at a time, " << refused << " refused");
  CHECK(keys > 100);
  CHECK(refused > 20);
  // The 270M shape's weights, as the synth preset and the published model have them (268.1 M).
  const ModelConfig small = parse_hf_config(read_text_file(folder + "gemma-3-270m.4.json"), "270m").model;
  CHECK(small.parameter_count() == 268098176);
  // The 1B config's: 999,885,952, the 999.89M that ollama lists for gemma3:1b (from its GGUF's tensors).
  CHECK(parse_hf_config(read_text_file(folder + "gemma-3-1b.5.json"), "1b").model.parameter_count() == 999885952);
  // Soft-capping (Gemma 2's) and RoPE scaling of the global layers are refused by name.
  nlohmann::json capped = nlohmann::json::parse(read_text_file(folder + "gemma-3-1b.4.json"));
  capped["final_logit_softcapping"] = 30.0;
  CHECK(testing::error_of([&] { parse_hf_config(capped.dump(), "c"); }).find("final_logit_softcapping") != std::string::npos);
  nlohmann::json scaled = nlohmann::json::parse(read_text_file(folder + "gemma-3-1b.4.json"));
  scaled["rope_scaling"] = {{"rope_type", "linear"}, {"factor", 8.0}};  // as Gemma 3 4B and up have it
  CHECK(parse_hf_config(scaled.dump(), "c").model.rope_linear_factor == 8.0f);
  scaled["rope_scaling"] = {{"rope_type", "yarn"}, {"factor", 8.0}};
  CHECK(testing::error_of([&] { parse_hf_config(scaled.dump(), "c"); }).find("RoPE type \"yarn\" is not supported") !=
        std::string::npos);
}

}  // namespace
}  // namespace fedcal
