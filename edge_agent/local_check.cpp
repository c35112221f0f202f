#include "edge_agent/local_check.h"

#include <algorithm>
#include <chrono>

#include "common/error.h"
#include "common/spread.h"
#include "models/engine/evaluation.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/model_loader.h"
#include "models/quant/quantize.h"

namespace fedcal::edge_agent {
namespace {

// Greedy batch-1 decoding from <s>: tokens per second of one run.
double decode_speed(Transformer& model, int bos, int steps) {
  steps = std::min(steps, model.config().max_seq_len - 1);
  int token = bos;
  const auto start = std::chrono::steady_clock::now();
  for (int pos = 0; pos < steps; ++pos) {
    const std::span<const float> logits = model.forward(std::span(&token, 1), pos, false);
    token = static_cast<int>(std::max_element(logits.begin(), logits.end()) - logits.begin());
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return seconds > 0 ? steps / seconds : 0;
}

// `runs` runs of each model, alternating, so that what else the device does at the time weighs on
// both alike; a first short run of each warms its caches and is not counted.
std::vector<Spread> decode_speeds(const std::vector<Transformer*>& models, int bos, const LocalCheckOptions& options) {
  std::vector<std::vector<double>> samples(models.size());
  for (Transformer* model : models) decode_speed(*model, bos, std::min(4, options.decode_tokens));
  for (int run = 0; run < options.decode_runs; ++run) {
    for (size_t i = 0; i < models.size(); ++i) samples[i].push_back(decode_speed(*models[i], bos, options.decode_tokens));
  }
  std::vector<Spread> speeds;
  for (std::vector<double>& model_samples : samples) speeds.push_back(spread_of(std::move(model_samples)));
  return speeds;
}

}  // namespace

LocalCheckOptions local_check_options(const AgentConfig& config) {
  LocalCheckOptions options;
  options.threads = config.threads;
  options.max_tokens = config.eval_max_tokens;
  options.decode_tokens = config.decode_tokens;
  options.decode_runs = config.decode_runs;
  return options;
}

LocalCheck check_package(const std::string& label, const std::string& fp32_package, const std::string& int8_package,
                         const SigningKey& coordinator_key, const std::string& heldout_text, const LocalCheckOptions& options,
                         bool require_int8) {
  LoadedModel fp32 = load_model(fp32_package, &coordinator_key);
  LoadedModel int8 = load_model(int8_package, &coordinator_key);
  if (require_int8 && int8.int8.empty()) fail("{}: not an INT8 package", int8_package);
  if (fp32.model.config.dim != int8.model.config.dim || fp32.model.config.vocab_size != int8.model.config.vocab_size ||
      fp32.model.config.n_layers != int8.model.config.n_layers) {
    fail("{}: not a quantization of {}", int8_package, fp32_package);
  }
  auto tokenizer = load_tokenizer(int8, std::nullopt);
  std::vector<int> tokens = tokenizer->encode(heldout_text, true);
  if (tokens.size() > static_cast<size_t>(options.max_tokens)) tokens.resize(static_cast<size_t>(options.max_tokens));
  if (tokens.size() < 2) fail("the held-out text has fewer than 2 tokens");

  if (options.weights_from_fp32) {
    QuantizeOptions weights;
    weights.per_channel = int8.package && int8.package->provenance.per_channel;
    for (const auto& [name, layer] : int8.int8) {
      if (name != "token_embedding" && (layer.weights.per_channel() || layer.weights.per_group())) weights.per_channel = true;
    }
    weights.keep_fp32 = int8.package ? std::set<std::string>(int8.package->provenance.keep_fp32.begin(), int8.package->provenance.keep_fp32.end())
                                     : std::set<std::string>();
    int8.int8 = quantize_model_weights(fp32.model, weights);
    int8.model = fp32.model;
  }
  XnnRuntime runtime(resolve_threads(options.threads, fp32.model.config.parameter_count()));
  Transformer reference(fp32.model, runtime, {}, fp32.int8.empty() ? nullptr : &fp32.int8);
  Transformer quantized(int8.model, runtime, {.activations = options.activations}, int8.int8.empty() ? nullptr : &int8.int8);
  const EvalResult result = evaluate(quantized, &reference, tokens, heldout_text.size());

  LocalCheck check;
  check.label = label;
  check.tokens = static_cast<uint64_t>(result.tokens);
  check.mean_kl = std::max(0.0, result.reference->mean_kl);
  check.top1_agreement = result.reference->top1_agreement;
  check.mean_nll = result.mean_nll;
  check.reference_mean_nll = std::log(result.reference->reference_perplexity);
  const std::vector<Spread> speeds = decode_speeds({&quantized, &reference}, tokenizer->bos_id(), options);
  check.decode_tokens_per_second = speeds[0].median;
  check.decode_spread = speeds[0].relative();
  check.reference_decode_tokens_per_second = speeds[1].median;
  check.reference_decode_spread = speeds[1].relative();
  return check;
}

LocalCheck self_test(const std::string& package, const SigningKey& coordinator_key, const LocalCheckOptions& options) {
  LoadedModel loaded = load_model(package, &coordinator_key);
  auto tokenizer = load_tokenizer(loaded, std::nullopt);
  XnnRuntime runtime(resolve_threads(options.threads, loaded.model.config.parameter_count()));
  Transformer model(loaded.model, runtime, {}, loaded.int8.empty() ? nullptr : &loaded.int8);
  LocalCheck check;
  check.label = "self-test";
  const Spread speed = decode_speeds({&model}, tokenizer->bos_id(), options)[0];
  check.decode_tokens_per_second = speed.median;
  check.decode_spread = speed.relative();
  if (!(check.decode_tokens_per_second > 0)) fail("{}: decoding produced nothing", package);
  return check;
}

}  // namespace fedcal::edge_agent
