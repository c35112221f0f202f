// config.json of real models in transformers 4.x and 5.x layouts (tests/models/format/hf_configs):
// each is read right or refused by name, and no key is ever ignored.
#include "models/format/hf_config.h"
#include "tests/models/format/hf_config_variants.h"

#include <doctest/doctest.h>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <optional>
#include <string>

#include "common/error.h"
#include "common/file_util.h"

namespace fedcal {
namespace {

const std::string kConfigs = FEDCAL_SOURCE_DIR "/tests/models/format/hf_configs/";

nlohmann::json config_file(const std::string& name) { return nlohmann::json::parse(read_text_file(kConfigs + name)); }

// The config, or the error it was refused with.
struct Outcome {
  std::optional<HfConfig> config;
  std::string error;
};
Outcome parse(const nlohmann::json& json) {
  try {
    return {parse_hf_config(json.dump(), "config.json"), ""};
  } catch (const Error& error) {
    return {std::nullopt, error.what()};
  }
}

bool same(const HfConfig& a, const HfConfig& b) {
  const ModelConfig &x = a.model, &y = b.model;
  return x.dim == y.dim && x.hidden_dim == y.hidden_dim && x.n_layers == y.n_layers && x.n_heads == y.n_heads &&
         x.n_kv_heads == y.n_kv_heads && x.vocab_size == y.vocab_size && x.max_seq_len == y.max_seq_len &&
         x.norm_eps == y.norm_eps && x.rope_theta == y.rope_theta && x.rope_scaling == y.rope_scaling &&
         x.shared_classifier == y.shared_classifier && x.head_dim == y.head_dim && x.qk_norm == y.qk_norm && x.qkv_bias == y.qkv_bias &&
         a.bos_token_id == b.bos_token_id && a.eos_token_id == b.eos_token_id;
}

using testing::changed;
using testing::use_of;

TEST_CASE("Hugging Face configs of real models, transformers 4.x and 5.x: read alike, or refused by key") {
  for (const char* model : {"smollm2-135m", "tinyllama-1.1b"}) {
    CAPTURE(model);
    const Outcome v4 = parse(config_file(std::string(model) + ".4.json"));
    const Outcome v5 = parse(config_file(std::string(model) + ".5.json"));
    REQUIRE_MESSAGE(v4.config, v4.error);
    REQUIRE_MESSAGE(v5.config, v5.error);
    CHECK(same(*v4.config, *v5.config));  // rope_theta found in rope_parameters (was: silently 10000)
  }
  const Outcome smollm = parse(config_file("smollm2-135m.5.json"));
  CHECK(smollm.config->model.rope_theta == 100000.0f);
  CHECK(smollm.config->model.n_kv_heads == 3);
  CHECK(smollm.config->model.shared_classifier);
  // Llama 3.2: its RoPE scaling read from either layout.
  const Outcome llama3_v4 = parse(config_file("llama-3.2-1b.4.json"));
  const Outcome llama3_v5 = parse(config_file("llama-3.2-1b.5.json"));
  REQUIRE_MESSAGE(llama3_v4.config, llama3_v4.error);
  REQUIRE_MESSAGE(llama3_v5.config, llama3_v5.error);
  CHECK(same(*llama3_v4.config, *llama3_v5.config));
  CHECK(llama3_v4.config->model.rope_theta == 500000.0f);
  CHECK(llama3_v4.config->model.rope_scaling == RopeScaling{32.0f, 1.0f, 4.0f, 8192});
  // Another RoPE type and the Qwen families: refused, naming what (not run with the wrong math).
  nlohmann::json yarn = config_file("llama-3.2-1b.5.json");
  yarn["rope_parameters"]["rope_type"] = "yarn";
  CHECK(parse(yarn).error.find("RoPE type \"yarn\" is not supported") != std::string::npos);
  // Qwen3: q/k norms and a head_dim of 128 (q 2048 wide on a 1024 residual), from either layout.
  const Outcome qwen3_v4 = parse(config_file("qwen3-0.6b.4.json"));
  const Outcome qwen3_v5 = parse(config_file("qwen3-0.6b.5.json"));
  REQUIRE_MESSAGE(qwen3_v4.config, qwen3_v4.error);
  REQUIRE_MESSAGE(qwen3_v5.config, qwen3_v5.error);
  CHECK(same(*qwen3_v4.config, *qwen3_v5.config));
  CHECK(qwen3_v4.config->model.qk_norm);
  CHECK(qwen3_v4.config->model.q_dim() == 2048);
  CHECK(qwen3_v4.config->model.rope_theta == 1000000.0f);
  // Qwen2.5 (q/k/v biases), from either layout.
  const Outcome qwen2_v4 = parse(config_file("qwen2.5-0.5b.4.json"));
  const Outcome qwen2_v5 = parse(config_file("qwen2.5-0.5b.5.json"));
  REQUIRE_MESSAGE(qwen2_v4.config, qwen2_v4.error);
  REQUIRE_MESSAGE(qwen2_v5.config, qwen2_v5.error);
  CHECK(same(*qwen2_v4.config, *qwen2_v5.config));
  CHECK(qwen2_v4.config->model.qkv_bias);
  CHECK_FALSE(qwen2_v4.config->model.qk_norm);
  CHECK(qwen2_v4.config->model.head_size() == 64);
  nlohmann::json qwen2_bias = config_file("qwen2.5-0.5b.5.json");
  qwen2_bias["attention_bias"] = true;
  CHECK(parse(qwen2_bias).error.find("config key 'attention_bias'") != std::string::npos);
  nlohmann::json llama_named_qwen2 = config_file("qwen2.5-0.5b.5.json");
  llama_named_qwen2["architectures"] = {"LlamaForCausalLM"};
  CHECK(parse(llama_named_qwen2).error.find("config key 'architectures'") != std::string::npos);
}

TEST_CASE("Hugging Face configs: every key of every real config is used or refused, never ignored") {
  size_t files = 0, keys = 0;
  for (const auto& entry : std::filesystem::directory_iterator(kConfigs)) {
    if (entry.path().extension() != ".json") continue;
    ++files;
    const nlohmann::json original = nlohmann::json::parse(read_text_file(entry.path().string()));
    const std::string file = entry.path().filename().string();
    CAPTURE(file);
    for (const auto& [key, value] : original.items()) use_of(key);  // every key is in the catalogue
    // Taken as a whole, the Llama-shaped ones are read; each key's value changed must then change
    // what is read, or be refused, unless the catalogue says it has no effect (and why).
    nlohmann::json base = original;
    if (base.contains("rope_theta") && base.contains("rope_parameters")) base.erase("rope_theta");
    const Outcome read = parse(base);
    REQUIRE_MESSAGE(read.config, read.error);
    for (const auto& item : base.items()) {
      const std::string key = item.key();
      const nlohmann::json value = item.value();
      CAPTURE(key);
      ++keys;
      nlohmann::json variant = base;
      variant[key] = changed(value);
      const Outcome outcome = parse(variant);
      if (!outcome.config) {
        CHECK_FALSE(outcome.error.empty());  // refused, naming the key or the field it contradicts
      } else if (same(*outcome.config, *read.config)) {
        CHECK(use_of(key) == HfKeyUse::kNoEffect);
      }
    }
    // Inside the RoPE objects too: every parameter changed changes what is read, or is refused.
    for (const char* rope : {"rope_parameters", "rope_scaling"}) {
      if (!base.contains(rope) || !base[rope].is_object()) continue;
      for (const auto& item : base[rope].items()) {
        const std::string name = item.key();
        const nlohmann::json value = item.value();
        CAPTURE(name);
        nlohmann::json variant = base;
        variant[rope][name] = changed(value);
        const Outcome outcome = parse(variant);
        CHECK((!outcome.config || !same(*outcome.config, *read.config)));
      }
    }
  }
  CHECK(files == 10);
  CHECK(keys > 200);
  for (const HfConfigKey& entry : hf_config_keys()) CHECK(std::string(entry.why).size() > 3);
}

TEST_CASE("Hugging Face configs: a key fedcal does not know is refused, naming it") {
  nlohmann::json config = config_file("tinyllama-1.1b.4.json");
  config["attn_logit_softcapping"] = 50.0;
  const Outcome outcome = parse(config);
  CHECK_FALSE(outcome.config);
  CHECK(outcome.error.find("config key 'attn_logit_softcapping' = 50.0 is not supported") != std::string::npos);
  // Qwen3's head_dim that is not hidden_size / heads: read (q and the attention output are 2048 wide).
  config = config_file("qwen3-0.6b.4.json");
  config["model_type"] = "llama";
  config["architectures"] = {"LlamaForCausalLM"};
  REQUIRE(parse(config).config);
  CHECK(parse(config).config->model.head_size() == 128);
  CHECK(parse(config).config->model.q_dim() == 2048);
  config = config_file("tinyllama-1.1b.4.json");
  config["rope_theta"] = 20000.0;
  config["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 10000.0}};
  CHECK(parse(config).error.find("rope_theta differs") != std::string::npos);
}

}  // namespace
}  // namespace fedcal
