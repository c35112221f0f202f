// Where a static INT8 linear's output error comes from, per linear, on held-out text: the mean squared
// error of its W8A8 output against FP32 (input quantized at its static scale, INT8 matmul, output
// requantized: the integer reference of what the engine runs), the part of it that is the mean error
// of each output channel (what bias correction can remove: docs/QUANTIZATION.md), and the error with
// INT8 weights alone (FP32 activations).
//   fedcal-bench-error -m MODEL --tokenizer TOK --stats STATS --text HELDOUT [--method mse] [--per-channel]
//                      [--windows 40] [--json]
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>

#include <cstdio>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file_util.h"
#include "models/engine/evaluation.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"

namespace fedcal {
namespace {

struct Options {
  std::string model, tokenizer, stats, text, method = "mse";
  bool per_channel = false, json = false;
  int windows = 40, threads = 1;
};

// The inputs of every quantization point over the windows run.
class Inputs : public ActivationObserver {
 public:
  void observe(int point, std::span<const float> values) override {
    std::vector<float>& kept = values_[point];
    kept.insert(kept.end(), values.begin(), values.end());
  }
  const std::vector<float>& at(int point) const { return values_.at(point); }

 private:
  std::map<int, std::vector<float>> values_;
};

struct LinearError {
  double mse = 0;          // mean over tokens and output channels of the squared W8A8 output error
  double mean_part = 0;    // mean over channels of (mean error of the channel)^2
  double weights_mse = 0;  // the same as mse, INT8 weights with FP32 activations
};

// x: (tokens, in) FP32 inputs; w: (out, in) FP32 weights.
LinearError measure(const QuantizedLinear& layer, const std::vector<float>& w, const std::vector<float>& x) {
  const size_t in = static_cast<size_t>(layer.weights.cols), out = static_cast<size_t>(layer.weights.rows);
  const size_t tokens = x.size() / in;
  std::vector<int8_t> xq(x.size());
  for (size_t i = 0; i < x.size(); ++i) xq[i] = quantize_value(x[i], layer.input);
  const std::vector<int8_t> yq = reference_linear_int8(layer, xq, tokens);
  std::vector<double> channel_mean(out, 0);
  LinearError error;
  for (size_t t = 0; t < tokens; ++t) {
    const float* row = x.data() + t * in;
    for (size_t o = 0; o < out; ++o) {
      double y = 0, y_weights = 0;
      const double scale = layer.weights.row_scale(static_cast<int>(o));
      for (size_t i = 0; i < in; ++i) {
        y += static_cast<double>(w[o * in + i]) * row[i];
        y_weights += layer.weights.values[o * in + i] * scale * row[i];
      }
      const double e = (static_cast<double>(yq[t * out + o]) - layer.output.zero_point) * layer.output.scale - y;
      channel_mean[o] += e;
      error.mse += e * e;
      error.weights_mse += (y_weights - y) * (y_weights - y);
    }
  }
  const double n = static_cast<double>(tokens * out);
  error.mse /= n;
  error.weights_mse /= n;
  for (const double sum : channel_mean) error.mean_part += (sum / static_cast<double>(tokens)) * (sum / static_cast<double>(tokens));
  error.mean_part /= static_cast<double>(out);
  return error;
}

void run(const Options& options) {
  LoadedModel loaded = load_model(options.model);
  if (!loaded.int8.empty()) fail("{}: an FP32 model is needed (the error is measured against it)", options.model);
  auto tokenizer = load_tokenizer(loaded, options.tokenizer.empty() ? std::nullopt : std::optional<std::string>(options.tokenizer));
  const CalibrationStats stats = read_stats(options.stats);
  if (stats.model_sha256 != model_fingerprint(loaded.model))
    fail("{}: statistics were recorded on another model than {}", options.stats, options.model);
  QuantizeOptions quantize;
  quantize.method = ScaleMethodSpec::parse(options.method);
  quantize.per_channel = options.per_channel;
  const QuantizedLinears int8 = quantize_model(loaded.model, stats, quantize);

  XnnRuntime runtime(options.threads);
  Transformer fp32(loaded.model, runtime);
  Inputs inputs;
  fp32.set_observer(&inputs);
  const std::vector<int> tokens = tokenizer->encode(read_utf8_text_file(options.text), true);
  const std::vector<std::vector<int>> windows =
      context_windows(tokens, static_cast<size_t>(loaded.model.config.max_seq_len), static_cast<size_t>(options.windows));
  for (const std::vector<int>& window : windows) fp32.forward(window, 0, true);
  const int run_windows = static_cast<int>(windows.size());
  fp32.set_observer(nullptr);
  if (run_windows == 0) fail("{}: no text", options.text);

  nlohmann::json rows = nlohmann::json::array();
  double mse = 0, mean_part = 0;
  if (!options.json) std::printf("%-18s %12s %12s %8s %14s %8s\n", "linear", "output MSE", "mean part", "share", "weights-only", "share");
  for (const LinearSite& site : linear_sites(loaded.model.config)) {
    const auto found = int8.find(site.name);
    if (found == int8.end()) continue;
    const LinearError error = measure(found->second, linear_weights(loaded.model, site.name), inputs.at(site.input_point));
    mse += error.mse;
    mean_part += error.mean_part;
    rows.push_back({{"linear", site.name}, {"mse", error.mse}, {"mean_part", error.mean_part}, {"weights_mse", error.weights_mse}});
    if (!options.json)
      std::printf("%-18s %12.3e %12.3e %7.1f%% %14.3e %7.1f%%\n", site.name.c_str(), error.mse, error.mean_part,
                  100 * error.mean_part / error.mse, error.weights_mse, 100 * error.weights_mse / error.mse);
  }
  if (options.json) {
    std::printf("%s\n", nlohmann::json{{"windows", run_windows}, {"linears", rows}, {"mean_share", mean_part / mse}}.dump(2).c_str());
  } else {
    std::printf("all linears: the mean part is %.2f%% of the summed output MSE (%d windows)\n", 100 * mean_part / mse, run_windows);
  }
}

}  // namespace
}  // namespace fedcal

int main(int argc, char** argv) {
  fedcal::Options options;
  CLI::App app("Per linear: static INT8 output error on text, its mean part (what bias correction removes), and the weights-only part");
  app.add_option("-m,--model", options.model, "FP32 model or package")->required()->check(CLI::ExistingFile);
  app.add_option("--tokenizer", options.tokenizer, "Tokenizer file, if the model holds none")->check(CLI::ExistingFile);
  app.add_option("--stats", options.stats, "Calibration statistics of the model (fedcal-model calibrate)")->required()->check(CLI::ExistingFile);
  app.add_option("--text", options.text, "Held-out text")->required()->check(CLI::ExistingFile);
  app.add_option("--method", options.method, "Scale method")->capture_default_str();
  app.add_flag("--per-channel", options.per_channel, "Per-channel weights");
  app.add_option("--windows", options.windows, "Context windows of the text to run")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("-t,--threads", options.threads, "Threads")->capture_default_str()->check(CLI::Range(1, 256));
  app.add_flag("--json", options.json, "One JSON object");
  CLI11_PARSE(app, argc, argv);
  try {
    fedcal::run(options);
  } catch (const std::exception& error) {
    std::fprintf(stderr, "fedcal-bench-error: error: %s\n", error.what());
    return 1;
  }
  return 0;
}
