// The matrix products alone: one decoding step's linear layers (batch 1, every matrix of the model
// in forward order) in FP32 and in INT8 on XNNPACK, without attention, norms or anything else, so
// the INT8 / FP32 ratio of the matmuls can be set next to the whole model's (fedcal-model bench).
//   fedcal-bench-matmul [--preset smollm-135m] [--threads 1,2] [--tokens 64] [--repeats 3] [--json]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <functional>
#include <memory>
#include <random>
#include <vector>

#include "common/error.h"
#include "models/engine/xnn_runtime.h"
#include "models/format/synth.h"
#include "models/quant/linear_int8.h"

namespace fedcal {
namespace {

struct Shape {
  int in, out;
};

// The linears of one decoding step in forward order: per layer wq, wk, wv, wo, w1, w3, w2; then the classifier.
std::vector<Shape> decode_shapes(const ModelConfig& c) {
  std::vector<Shape> shapes;
  for (int l = 0; l < c.n_layers; ++l) {
    for (Shape s : {Shape{c.dim, c.dim}, Shape{c.dim, c.kv_dim()}, Shape{c.dim, c.kv_dim()}, Shape{c.dim, c.dim},
                    Shape{c.dim, c.hidden_dim}, Shape{c.dim, c.hidden_dim}, Shape{c.hidden_dim, c.dim}}) {
      shapes.push_back(s);
    }
  }
  shapes.push_back({c.dim, c.vocab_size});
  return shapes;
}

// Best seconds per step over `repeats` timed runs of `tokens` steps (after one warm-up run).
double seconds_per_step(const std::function<void()>& step, int tokens, int repeats) {
  double best = 1e30;
  for (int repeat = 0; repeat <= repeats; ++repeat) {
    const auto start = std::chrono::steady_clock::now();
    for (int t = 0; t < tokens; ++t) step();
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count() / tokens;
    if (repeat > 0) best = std::min(best, seconds);
  }
  return best;
}

struct Result {
  int threads;
  std::string variant;
  double seconds;
  size_t weight_bytes;
};

std::vector<Result> run(const ModelConfig& config, int threads, int tokens, int repeats) {
  const std::vector<Shape> shapes = decode_shapes(config);
  int widest = 0;
  for (Shape s : shapes) widest = std::max({widest, s.in, s.out});
  XnnRuntime runtime(threads);
  std::mt19937 rng(1);
  std::vector<float> input(widest + XNN_EXTRA_BYTES, 0.5f), output(widest + XNN_EXTRA_BYTES);
  std::vector<int8_t> input_q(widest + XNN_EXTRA_BYTES, 3), output_q(widest + XNN_EXTRA_BYTES);
  std::vector<Result> results;

  {
    std::vector<std::unique_ptr<LinearF32>> layers;
    size_t bytes = 0;
    std::normal_distribution<float> normal(0.0f, 0.05f);
    for (Shape s : shapes) {
      std::vector<float> weights(size_t(s.in) * s.out);
      for (float& w : weights) w = normal(rng);
      layers.push_back(std::make_unique<LinearF32>(weights.data(), s.in, s.out, "fp32"));
      bytes += layers.back()->weight_bytes();
    }
    const double seconds = seconds_per_step(
        [&] {
          for (auto& layer : layers) layer->run(runtime, 1, input.data(), output.data());
        },
        tokens, repeats);
    results.push_back({threads, "FP32", seconds, bytes});
  }
  for (bool per_channel : {false, true}) {
    std::vector<std::unique_ptr<LinearInt8>> layers;
    size_t bytes = 0;
    std::uniform_int_distribution<int> uniform(-127, 127);
    for (Shape s : shapes) {
      QuantizedLinear q;
      q.weights.rows = s.out;
      q.weights.cols = s.in;
      q.weights.values.resize(size_t(s.in) * s.out);
      for (int8_t& w : q.weights.values) w = static_cast<int8_t>(uniform(rng));
      q.weights.granularity = per_channel ? WeightGranularity::kPerChannel : WeightGranularity::kPerTensor;
      q.weights.scales.assign(per_channel ? s.out : 1, 0.01f);
      q.input = {0.05f, 0};
      q.output = {0.05f, 0};
      layers.push_back(std::make_unique<LinearInt8>(q, "int8"));
      bytes += layers.back()->weight_bytes();
    }
    const std::string name = per_channel ? "INT8 per-channel" : "INT8 per-tensor";
    const double gemv = seconds_per_step(
        [&] {
          for (auto& layer : layers) layer->run_int8(runtime, 1, input_q.data(), output_q.data());
        },
        tokens, repeats);
    results.push_back({threads, name + " (INT8 in/out)", gemv, bytes});
    const double converted = seconds_per_step(
        [&] {
          for (auto& layer : layers) layer->run(runtime, 1, input.data(), output.data());
        },
        tokens, repeats);
    results.push_back({threads, name + " (FP32 in/out)", converted, bytes});
  }
  return results;
}

}  // namespace
}  // namespace fedcal

int main(int argc, char** argv) {
  using namespace fedcal;
  CLI::App app{"Decode-step matrix products alone, FP32 vs INT8 on XNNPACK"};
  std::string preset = "smollm-135m";
  std::vector<int> thread_counts{1, 2};
  int tokens = 64, repeats = 3;
  bool json = false;
  app.add_option("--preset", preset, "Model shape (fedcal-model synth --list)");
  app.add_option("--threads", thread_counts, "Thread counts, comma separated")->delimiter(',');
  app.add_option("--tokens", tokens, "Decoding steps per timed run")->check(CLI::Range(1, 100000));
  app.add_option("--repeats", repeats, "Timed runs (best is reported)")->check(CLI::Range(1, 1000));
  app.add_flag("--json", json, "Print one JSON array");
  CLI11_PARSE(app, argc, argv);
  try {
    const ModelConfig config = find_synth_preset(preset).config;
    nlohmann::json rows = nlohmann::json::array();
    if (!json) std::printf("| threads | matmuls | ms per step | weight GB/s | vs FP32 |\n| --- | --- | --- | --- | --- |\n");
    for (int threads : thread_counts) {
      const std::vector<Result> results = run(config, threads, tokens, repeats);
      for (const Result& r : results) {
        const double ratio = results.front().seconds / r.seconds;
        const double gbps = static_cast<double>(r.weight_bytes) / r.seconds / 1e9;
        if (json) {
          rows.push_back({{"threads", r.threads},
                          {"variant", r.variant},
                          {"seconds_per_step", r.seconds},
                          {"weight_bytes", r.weight_bytes},
                          {"weight_gb_per_s", gbps},
                          {"speedup_vs_fp32", ratio}});
        } else {
          std::printf("| %d | %s | %.2f | %.1f | %.2fx |\n", r.threads, r.variant.c_str(), r.seconds * 1e3, gbps, ratio);
        }
        std::fflush(stdout);
      }
    }
    if (json) std::printf("%s\n", rows.dump(2).c_str());
  } catch (const Error& e) {
    std::fprintf(stderr, "fedcal-bench-matmul: %s\n", e.what());
    return 1;
  }
  return 0;
}
