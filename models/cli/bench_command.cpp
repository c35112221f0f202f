#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <memory>
#include <random>

#include "common/error.h"
#include "common/spread.h"
#include "models/cli/cli_support.h"
#include "models/cli/commands.h"
#include "models/engine/transformer.h"
#include "models/engine/vector_math.h"
#include "models/format/model_loader.h"

namespace fedcal::cli {
namespace {

struct BenchOptions {
  ModelOptions model;
  QuantizationOptions quantization;
  int prompt_tokens = 64;
  int decode_tokens = 64;
  int repeats = 5;
  bool json = false;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void run_bench(const BenchOptions& options) {
  LoadedModel loaded = load_model_with(options.model);
  const int threads = resolve_threads(options.model.threads, loaded.model.config.parameter_count());
  XnnRuntime runtime(threads);
  std::unique_ptr<Transformer> model =
      make_transformer(std::move(loaded), runtime, options.quantization, nullptr, {.max_batch = std::max(1, options.prompt_tokens)});
  Transformer& transformer = *model;
  const ModelConfig& c = transformer.config();
  if (options.prompt_tokens + options.decode_tokens > c.max_seq_len) {
    fail("--prompt-tokens + --decode-tokens = {} exceeds the context length {}", options.prompt_tokens + options.decode_tokens,
         c.max_seq_len);
  }

  std::mt19937 rng(7);
  std::vector<int> prompt(options.prompt_tokens);
  for (int& token : prompt) token = static_cast<int>(rng() % c.vocab_size);

  // `repeats` runs of: prefill the prompt, then decode tokens one at a time (greedy); the median run
  // is reported with the range of all.
  std::vector<double> prefill_samples, decode_samples;
  for (int repeat = 0; repeat < options.repeats + 1; ++repeat) {  // the first run warms caches and is not counted
    auto start = std::chrono::steady_clock::now();
    std::span<const float> logits = transformer.forward(prompt, 0, false);
    const double prefill = seconds_since(start);
    start = std::chrono::steady_clock::now();
    for (int i = 0; i < options.decode_tokens; ++i) {
      const int token = argmax(logits);
      logits = transformer.forward(std::span(&token, 1), options.prompt_tokens + i, false);
    }
    const double decode = seconds_since(start);
    if (repeat > 0) {
      prefill_samples.push_back(options.prompt_tokens / prefill);
      decode_samples.push_back(options.decode_tokens / decode);
    }
  }
  const Spread prefill_speed = spread_of(prefill_samples), decode_speed = spread_of(decode_samples);
  const double prefill_tps = prefill_speed.median;
  const double decode_tps = decode_speed.median;
  const double weight_gbps = static_cast<double>(transformer.decode_weight_bytes()) * decode_tps / 1e9;
  const size_t peak_rss = peak_resident_bytes();
  const size_t resident_weights = transformer.resident_weight_bytes();
  const size_t file_bytes = model_file_bytes(options.model.model);
  const std::string int8_kernel(int8_kernel_name(options.quantization.int8_kernel.value_or(int8_kernels_supported().front())));

  if (options.json) {
    nlohmann::json out = {{"model", options.model.model},
                          {"threads", threads},
                          {"int8_kernel", int8_kernel},
                          {"parameters", c.parameter_count()},
                          {"model_bytes", file_bytes},
                          {"prompt_tokens", options.prompt_tokens},
                          {"decode_tokens", options.decode_tokens},
                          {"runs", options.repeats},
                          {"prefill_tokens_per_s", prefill_tps},
                          {"prefill_tokens_per_s_range", {prefill_speed.low, prefill_speed.high}},
                          {"decode_tokens_per_s", decode_tps},
                          {"decode_tokens_per_s_range", {decode_speed.low, decode_speed.high}},
                          {"decode_weight_bytes_per_token", transformer.decode_weight_bytes()},
                          {"decode_weight_gb_per_s", weight_gbps},
                          {"resident_weight_bytes", resident_weights},
                          {"kv_cache_bytes", transformer.kv_cache_bytes()},
                          {"peak_rss_bytes", peak_rss},
                          {"peak_rss_vs_weights", static_cast<double>(peak_rss) / static_cast<double>(resident_weights)}};
    std::printf("%s\n", out.dump(2).c_str());
    return;
  }
  std::printf("model:          %s (%.1f M parameters, %.1f MB on disk)\n", options.model.model.c_str(), c.parameter_count() / 1e6,
              file_bytes / 1e6);
  std::printf("threads:        %d\n", threads);
  std::printf("INT8 kernel:    %s (layers with activations quantized at run time)\n", int8_kernel.c_str());
  std::printf("prefill:        %.1f tokens/s (%d-token prompt, median of %d runs: %.1f-%.1f)\n", prefill_tps,
              options.prompt_tokens, options.repeats, prefill_speed.low, prefill_speed.high);
  std::printf("decode:         %.2f tokens/s (%d tokens, median of %d runs: %.2f-%.2f)\n", decode_tps, options.decode_tokens,
              options.repeats, decode_speed.low, decode_speed.high);
  std::printf("decode weights: %.2f GB/s read (%.1f MB per token)\n", weight_gbps, transformer.decode_weight_bytes() / 1e6);
  std::printf("peak RSS:       %.1f MB, %.3fx the %.1f MB of weights the engine holds (packed matrices, token table, norms)\n",
              peak_rss / 1e6, static_cast<double>(peak_rss) / static_cast<double>(resident_weights), resident_weights / 1e6);
  std::printf("KV cache:       %.1f MB for %d positions (a sliding-window layer holds only its window)\n",
              transformer.kv_cache_bytes() / 1e6, c.max_seq_len);
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto options = std::make_shared<BenchOptions>();
  CLI::App* command = app.add_subcommand("bench", "Prefill and decode speed, weight bandwidth and peak memory of a model");
  add_model_options(*command, options->model, /*with_tokenizer=*/false);
  add_quantization_options(*command, options->quantization);
  command->add_option("--prompt-tokens", options->prompt_tokens, "Prompt length for the prefill measurement")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  command->add_option("--decode-tokens", options->decode_tokens, "Tokens decoded one at a time")
      ->capture_default_str()
      ->check(CLI::Range(1, 1 << 20));
  command->add_option("--repeats", options->repeats, "Measured runs (the median is reported, with the range)")
      ->capture_default_str()
      ->check(CLI::Range(1, 1000));
  command->add_flag("--json", options->json, "Print one JSON object");
  command->callback([options] { run_bench(*options); });
}

}  // namespace fedcal::cli
