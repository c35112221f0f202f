// ONNX and TensorRT exports, run in the real runtime: ONNX Runtime from npm (onnxruntime-node,
// tests/oracles) executes the exported graphs, ONNX's own checker (python3-onnx) validates them.
#include <doctest/doctest.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "common/error.h"
#include "common/file_util.h"
#include "models/engine/transformer.h"
#include "models/format/model_loader.h"
#include "models/format/onnx_model.h"
#include "models/format/synth.h"
#include "models/format/tensorrt_cache.h"
#include "models/quant/calibration.h"
#include "models/quant/quantize.h"
#include "models/tokenizer/sentencepiece_tokenizer.h"
#include "tests/error_of.h"
#include "tests/test_support.h"

namespace fedcal {
namespace {

using testing::error_of;
using testing::ScratchDir;

using testing::kProjectModel;
using testing::kProjectTokenizer;

// onnx.checker.check_model with full_check (shape inference too), from Debian's python3-onnx.
void check_with_onnx_checker(const std::string& path) {
  const testing::CommandResult result = testing::run_command(
      "/usr/bin/python3 -c \"import onnx, sys; onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)\" '" + path + "'",
      true);
  REQUIRE_MESSAGE(result.exit_code == 0, "onnx.checker (python3-onnx, deploy/install-deps.sh installs it): " << result.output);
}

// Logits (sequence, vocab) of every sequence, one after another, as ONNX Runtime computes them.
std::vector<float> onnx_runtime_logits(const ScratchDir& dir, const std::string& model, const std::vector<std::vector<int>>& sequences,
                                       int vocab) {
  const std::string missing = testing::oracles_missing();
  REQUIRE_MESSAGE(missing.empty(), missing);
  std::string ids;
  size_t tokens = 0;
  for (const std::vector<int>& sequence : sequences) {
    for (int token : sequence) ids += std::to_string(token) + " ";
    ids += "\n";
    tokens += sequence.size();
  }
  testing::write_text(dir.path("ids.txt"), ids);
  const testing::CommandResult run = testing::run_oracle("onnx_run.mjs", model + " " + dir.path("ids.txt") + " " + dir.path("logits.f32"));
  REQUIRE_MESSAGE(run.exit_code == 0, run.output);
  const std::string bytes = read_text_file(dir.path("logits.f32"));
  REQUIRE(bytes.size() == tokens * vocab * sizeof(float));
  std::vector<float> logits(tokens * vocab);
  std::memcpy(logits.data(), bytes.data(), bytes.size());
  return logits;
}

// Two sequences of different lengths (the graph's sequence axis is dynamic), the longer one the
// whole context.
std::vector<std::vector<int>> two_sequences(const ModelConfig& config) {
  std::vector<std::vector<int>> sequences(2);
  for (int i = 0; i < config.max_seq_len; ++i) sequences[0].push_back((i * 7919 + 1) % config.vocab_size);
  for (int i = 0; i < 17; ++i) sequences[1].push_back((i * 104729 + 3) % config.vocab_size);
  return sequences;
}

// fedcal's logits of the same sequences, each run from position 0.
std::vector<float> fedcal_logits(Transformer& model, const std::vector<std::vector<int>>& sequences) {
  std::vector<float> out;
  for (const std::vector<int>& sequence : sequences) {
    const std::span<const float> logits = model.forward(sequence, 0, true);
    out.insert(out.end(), logits.begin(), logits.end());
  }
  return out;
}

std::vector<double> log_softmax(std::span<const float> logits) {
  double max = logits[0];
  for (float v : logits) max = std::max<double>(max, v);
  double sum = 0;
  for (float v : logits) sum += std::exp(v - max);
  std::vector<double> out;
  for (float v : logits) out.push_back(v - max - std::log(sum));
  return out;
}

size_t argmax(std::span<const float> row) { return static_cast<size_t>(std::max_element(row.begin(), row.end()) - row.begin()); }

struct Agreement {
  double mean_kl = 0;  // KL(reference || model) per token, nats
  double top1 = 0;     // share of tokens with the same argmax
  double max_abs = 0;  // largest logit difference
  double max_relative = 0;  // largest row's max |difference| / max |reference|
};

Agreement compare(const std::vector<float>& reference, const std::vector<float>& model, int vocab) {
  Agreement a;
  const size_t rows = reference.size() / vocab;
  for (size_t r = 0; r < rows; ++r) {
    const std::span<const float> ref(&reference[r * vocab], vocab), got(&model[r * vocab], vocab);
    const std::vector<double> p = log_softmax(ref), q = log_softmax(got);
    double kl = 0, row_abs = 0, row_scale = 0;
    for (int i = 0; i < vocab; ++i) {
      kl += std::exp(p[i]) * (p[i] - q[i]);
      row_abs = std::max(row_abs, std::fabs(static_cast<double>(ref[i]) - got[i]));
      row_scale = std::max(row_scale, std::fabs(static_cast<double>(ref[i])));
    }
    a.mean_kl += kl / rows;
    a.top1 += argmax(ref) == argmax(got) ? 1.0 : 0.0;
    a.max_abs = std::max(a.max_abs, row_abs);
    a.max_relative = std::max(a.max_relative, row_abs / row_scale);
  }
  a.top1 /= static_cast<double>(rows);
  return a;
}

// Held-out windows of the project model: <s> + `length` - 1 tokens each.
std::vector<std::vector<int>> heldout_windows(const Tokenizer& tokenizer, int count, int length) {
  const std::vector<int> tokens = tokenizer.encode(testing::tinystories_heldout().substr(0, 60000), false);
  std::vector<std::vector<int>> windows;
  for (int w = 0; w < count; ++w) {
    std::vector<int> window = {tokenizer.bos_id()};
    const auto start = tokens.begin() + static_cast<std::ptrdiff_t>(w) * (length - 1);
    window.insert(window.end(), start, start + length - 1);
    windows.push_back(std::move(window));
  }
  return windows;
}

std::map<std::string, float> parse_tensorrt_cache(const std::string& text) {
  std::istringstream lines(text);
  std::string line;
  std::getline(lines, line);
  REQUIRE(line == "TRT-8602-EntropyCalibration2");
  std::map<std::string, float> scales;
  while (std::getline(lines, line)) {
    const size_t colon = line.find(": ");
    REQUIRE(colon != std::string::npos);
    const uint32_t bits = static_cast<uint32_t>(std::stoul(line.substr(colon + 2), nullptr, 16));
    scales[line.substr(0, colon)] = std::bit_cast<float>(bits);
  }
  return scales;
}

}  // namespace

TEST_CASE("ONNX FP32 export: passes onnx.checker, and ONNX Runtime's logits match fedcal FP32 within 1e-4 relative" *
          doctest::test_suite("oracle")) {
  ScratchDir dir;
  XnnRuntime runtime(1);
  // The project model, and synthetic ones with grouped-query attention, Llama 3 RoPE scaling, an
  // explicit head_dim, Qwen3's q/k norms, Qwen2's q/k/v biases and an untied classifier.
  std::vector<std::pair<std::string, Model>> models;
  models.emplace_back("tinystories-1.8m", load_model(kProjectModel).model);
  for (const char* preset : {"tiny", "tiny-mha", "tiny-llama3", "tiny-head-dim", "tiny-qwen3", "tiny-qwen2"})
    models.emplace_back(preset, synthesize_model(find_synth_preset(preset).config, 5));
  for (const auto& entry : models) {
    const std::string& name = entry.first;  // (clang 14 cannot capture a structured binding)
    const Model& model = entry.second;
    CAPTURE(name);
    const std::string path = dir.path(name + ".onnx");
    const OnnxExportSummary summary = write_onnx_model(path, model, {});
    CHECK(summary.int8_linears == 0);
    CHECK(summary.fp32_linears == 7 * model.config.n_layers + 1);
    check_with_onnx_checker(path);
    const std::vector<std::vector<int>> sequences = two_sequences(model.config);
    Transformer fp32(model, runtime);
    const Agreement a = compare(fedcal_logits(fp32, sequences), onnx_runtime_logits(dir, path, sequences, model.config.vocab_size),
                                model.config.vocab_size);
    MESSAGE(name << ": ONNX Runtime vs fedcal FP32: max relative " << a.max_relative << ", max abs " << a.max_abs);
    CHECK(a.max_relative <= 1e-4);
    CHECK(a.top1 == 1.0);
  }
}

TEST_CASE(
    "ONNX FP32 export of Gemma 3 (sliding-window layers, post-norms, (1 + w) norms, GeGLU, scaled embeddings): ONNX Runtime "
    "matches fedcal FP32 within 1e-4 relative past the window" *
    doctest::test_suite("oracle")) {
  ScratchDir dir;
  XnnRuntime runtime(1);
  // The PyTorch-checked tiny checkpoint (2 local layers with a window of 16, then a global one).
  const Model model = load_model(FEDCAL_SOURCE_DIR "/tests/reference/gemma3-tiny").model;
  const std::string path = dir.path("gemma3.onnx");
  const OnnxExportSummary summary = write_onnx_model(path, model, {});
  CHECK(summary.fp32_linears == 7 * model.config.n_layers + 1);
  check_with_onnx_checker(path);
  const std::vector<std::vector<int>> sequences = two_sequences(model.config);
  Transformer fp32(model, runtime);
  const std::vector<float> expected = fedcal_logits(fp32, sequences);
  const std::vector<float> onnx = onnx_runtime_logits(dir, path, sequences, model.config.vocab_size);
  const Agreement a = compare(expected, onnx, model.config.vocab_size);
  MESSAGE("gemma3-tiny: ONNX Runtime vs fedcal FP32: max relative " << a.max_relative << ", max abs " << a.max_abs);
  CHECK(a.max_relative <= 1e-4);
  CHECK(a.top1 == 1.0);
  // The graph's window is the model's: without it fedcal's logits past position 16 move away.
  Model unwindowed = model;
  unwindowed.config.sliding_window = unwindowed.config.max_seq_len;
  Transformer wide(unwindowed, runtime);
  CHECK(compare(fedcal_logits(wide, sequences), onnx, model.config.vocab_size).max_relative > 1e-2);
}

TEST_CASE("ONNX QDQ export: ONNX Runtime runs the package's INT8 model as fedcal's engine does, as close to FP32 (within 2%)" *
          doctest::test_suite("oracle")) {
  ScratchDir dir;
  XnnRuntime runtime(1);
  const Model model = load_model(kProjectModel).model;
  const auto tokenizer = SentencePieceTokenizer::from_serialized(read_text_file(kProjectTokenizer), "tokenizer.model");
  // A round's default quantization: mse scales, per-channel weights, from 64 training documents.
  Transformer fp32(model, runtime);
  CalibrationOptions calibration;
  calibration.sequences = 64;
  const CalibrationStats stats = calibrate(fp32, *tokenizer, testing::tinystories_train(), model_fingerprint(model), calibration);
  QuantizeOptions options;
  options.method = ScaleMethodSpec::parse("mse");
  options.per_channel = true;
  const QuantizedLinears int8 = quantize_model(model, stats, options);

  const std::string path = dir.path("qdq.onnx");
  const OnnxExportSummary summary = write_onnx_model(path, model, int8);
  CHECK(summary.int8_linears == 7 * model.config.n_layers + 1);
  CHECK(summary.fp32_linears == 0);
  check_with_onnx_checker(path);

  const int vocab = model.config.vocab_size;
  const std::vector<std::vector<int>> windows = heldout_windows(*tokenizer, 8, 128);  // 1024 held-out tokens
  Transformer engine_int8(model, runtime, {}, &int8);
  const std::vector<float> reference = fedcal_logits(fp32, windows);
  const std::vector<float> engine = fedcal_logits(engine_int8, windows);
  const std::vector<float> onnx = onnx_runtime_logits(dir, path, windows, vocab);
  const Agreement onnx_vs_engine = compare(engine, onnx, vocab);
  const Agreement engine_vs_fp32 = compare(reference, engine, vocab);
  const Agreement onnx_vs_fp32 = compare(reference, onnx, vocab);
  MESSAGE("QDQ in ONNX Runtime vs fedcal INT8: top-1 " << onnx_vs_engine.top1 << ", max abs logit difference " << onnx_vs_engine.max_abs
                                                        << ", KL " << onnx_vs_engine.mean_kl);
  MESSAGE("vs FP32: fedcal INT8 KL " << engine_vs_fp32.mean_kl << " top-1 " << engine_vs_fp32.top1 << "; ONNX Runtime QDQ KL "
                                     << onnx_vs_fp32.mean_kl << " top-1 " << onnx_vs_fp32.top1);
  CHECK(onnx_vs_engine.top1 >= 0.99);
  // The two differ in float rounding outside the integer MatMuls (ONNX Runtime's QuantizeLinear,
  // Softmax and fused DequantizeLinear -> MatMul of the w1 layers): measured 0.9976x on an AVX512-VNNI
  // CPU, 1.0025x on an AVX2-only one.
  CHECK(onnx_vs_fp32.mean_kl <= 1.02 * engine_vs_fp32.mean_kl);
}

TEST_CASE("TensorRT cache: every activation an INT8 MatMul of the FP32 ONNX graph reads or writes, at the package's scale") {
  ScratchDir dir;
  const Model model = synthesize_model(find_synth_preset("tiny").config, 6);
  XnnRuntime runtime(1);
  Transformer fp32(model, runtime);
  CalibrationStats stats = CalibrationStats::empty_for(model.config, model_fingerprint(model));
  StatsRecorder recorder(stats);
  fp32.set_observer(&recorder);
  std::vector<int> tokens;
  for (int i = 0; i < 96; ++i) tokens.push_back((i * 31 + 7) % model.config.vocab_size);
  fp32.forward(tokens, 0, true);
  QuantizeOptions options;
  options.keep_fp32 = {"layers.1.w2"};  // an FP32 linear: its tensors have no entry unless an INT8 one shares them
  const QuantizedLinears int8 = quantize_model(model, stats, options);
  const std::map<std::string, float> cache = parse_tensorrt_cache(tensorrt_cache_text(tensorrt_cache_entries(model.config, int8), 8602));

  // The FP32 graph's MatMuls by a weight (initializer), read by ONNX's own parser: their activation
  // input and output tensor names.
  const std::string path = dir.path("fp32.onnx");
  write_onnx_model(path, model, {});
  const testing::CommandResult listed = testing::run_command(
      "/usr/bin/python3 -c \"import onnx, sys\n"
      "g = onnx.load(sys.argv[1]).graph\n"
      "weights = {i.name for i in g.initializer}\n"
      "for n in g.node:\n"
      "    if n.op_type == 'MatMul' and n.input[1] in weights: print(n.input[1], n.input[0], n.output[0])\" '" + path + "'",
      true);
  REQUIRE_MESSAGE(listed.exit_code == 0, listed.output);
  std::istringstream lines(listed.output);
  std::string weight, input, output;
  int matmuls = 0;
  size_t covered = 0;
  while (lines >> weight >> input >> output) {
    ++matmuls;
    const std::string linear = weight.substr(0, weight.size() - std::string(".weight_t").size());
    CAPTURE(linear);
    const auto layer = int8.find(linear);
    if (layer == int8.end()) {
      CHECK(linear == "layers.1.w2");
      CHECK(cache.count(output) == 0);
      continue;
    }
    REQUIRE(cache.count(input) == 1);
    REQUIRE(cache.count(output) == 1);
    CHECK(cache.at(input) == layer->second.input.scale);
    CHECK(cache.at(output) == layer->second.output.scale);
    covered += 2;
  }
  CHECK(matmuls == 7 * model.config.n_layers + 1);
  // Every quantization point once (attn_in feeds wq, wk, wv; ffn_in feeds w1, w3), less the two of
  // the FP32 layers.1.w2: layers.1.ffn_hidden and layers.1.w2_out.
  CHECK(cache.size() == size_t(11 * model.config.n_layers + 2) - 2);
  CHECK(covered > cache.size());
}

TEST_CASE("ONNX and TensorRT exports refuse what they cannot hold, by name") {
  const Model model = synthesize_model(find_synth_preset("tiny").config, 6);
  QuantizedLinears int8 = quantize_model_weights(model, {});
  for (auto& [name, layer] : int8) layer.input.scale = layer.output.scale = 0.05f;
  int8["layers.0.w1"].input.zero_point = 3;  // asymmetric activations
  CHECK(error_of([&] { tensorrt_cache_entries(model.config, int8); }).find("layers.0.w1: zero point 3 at layers.0.ffn_in") !=
        std::string::npos);
  CHECK(error_of([&] { tensorrt_cache_entries(model.config, {}); }).find("no INT8 linear layers") != std::string::npos);
  int8["layers.0.w1"].input.zero_point = 0;
  int8["layers.0.w3"].input.scale = 0.07f;  // two scales for one tensor
  CHECK(error_of([&] { tensorrt_cache_entries(model.config, int8); }).find("another linear reading it has") != std::string::npos);
  int8["layers.1.wo"].weights.rows = 7;  // a package whose INT8 layer does not fit the model
  CHECK(error_of([&] { onnx_from_model(model, int8); }).find("layers.1.wo: INT8 weights are (7, 64)") != std::string::npos);
}

}  // namespace fedcal
